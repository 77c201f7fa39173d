"""The report of `iclgd reproduce`: one Markdown and one HTML page per results folder, in the paper's shape.

    Setting             the model (marked "different model" unless it is the paper's), tasks, sizes, lrs, run time
    the paper's tables  ours beside the published numbers (mean ± std over runs, or one unit's 95% interval)
    per task            every score with its baselines and intervals, mean ± std over runs; the no-ICL flag
    untrained variants  paired tests of each trained run's scores against its untrained variants (also as Parquet)
    figures             the paper's (Deutch et al.: Figures 2-4) and the per-layer / accuracy plots
    configs, versions   every unit's config as its record holds it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import yaml
from rich.table import Table

from iclgd.report import deutch
from iclgd.report.document import Figure, Preformatted, Section, write_report
from iclgd.report.paired import TESTS_FILE, PairedScores, variant_test_table, write_variant_tests
from iclgd.report.plots import plot_accuracy_bars, plot_per_layer
from iclgd.report.tables import paper_table, summary_table
from iclgd.runner.results import open_results
from iclgd.synthetic.linreg.tables import compare_table, order_table, perturbation_table, sparsity_table, with_ci

if TYPE_CHECKING:
    from iclgd.experiments.config import CompareConfig
    from iclgd.experiments.reproduce import Reproduction
    from iclgd.synthetic.linreg.reproduce import LinregReproduction

CAPTIONS = {"fig2": "Figure 2: α (SimAM_Δ between the LCGD and the GD update) per task and model variant",
            "fig3": "Figure 3: SimAOU and SimAM_Δ per layer, GD and LCGD, trained and untrained",
            "fig4": "Figure 4: per-layer gradient norm at each FT step (GD linear, LCGD log colour scale)"}


def config_text(out: Path, configs: list[CompareConfig]) -> str:
    """Every unit's full config as its record holds it, one YAML document per unit."""
    documents = []
    for cfg in configs:
        record = json.loads((out / cfg.unit_id() / "record.json").read_text())
        documents.append(yaml.safe_dump({"unit": cfg.unit_id(), **record["config"]}, sort_keys=False))
    return "---\n".join(documents)


def versions_and_times(out: Path, configs: list[CompareConfig]) -> tuple[dict[str, str], float]:
    """The library versions (of the first unit; every unit records its own) and the units' summed compute time."""
    records = [json.loads((out / cfg.unit_id() / "record.json").read_text()) for cfg in configs]
    return records[0]["versions"], sum(r["timings"].get("total_s", 0.0) for r in records)


def _setting(run: Reproduction, out: Path, command: str | None) -> Section:
    from iclgd.experiments.reproduce import is_papers_model

    protocol, configs = run.protocol, run.configs
    trained = [c for c in configs if c.untrained is None]
    first = trained[0]
    model = run.model if is_papers_model(protocol, run.model) else (
        f"{run.model} (different model: the paper used {protocol.model})")
    tasks = sorted({c.task for c in trained})
    other = [t for t in tasks if t not in protocol.tasks]
    versions, compute_s = versions_and_times(out, configs)
    lrs = "; ".join(sorted({f"{c.task} seed {c.seed}: {run.lrs[c.unit_id()]:g}" for c in trained}))
    variants = ["trained"] + sorted({f"untrained:{c.untrained}" for c in configs if c.untrained})
    methods = list(dict.fromkeys(m for c in configs for m in c.methods))
    reuse = " (the untrained units reuse them)" if len(configs) > len(trained) else ""
    lines = [
        f"Paper: {protocol.title} ({run.paper}).",
        f"Model: {model}.",
        f"Tasks: {', '.join(tasks)}" + (f" ({', '.join(other)}: not the paper's tasks)." if other else "."),
        f"Units: {len(configs)} ({len(trained)} trained runs x {', '.join(variants)}); k = {first.shots}, "
        f"{first.eval_size} eval rows, FT methods {', '.join(methods)}"
        + (", sized by --quick for 2 CPU cores" if run.quick else "") + ".",
        f"Learning rates of the trained units{reuse}: {lrs}.",
        f"Run time: {run.wall_s:.0f} s for this call (finished units are reused), {compute_s:.0f} s of unit "
        "compute in all.",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        f"Command: {command}" if command else "",
    ]
    return Section("Setting", [line for line in lines if line])


def _shen_sections(con, plots: Path) -> list[Section]:
    """Shen et al.: the Sen summary and Table 1 beside their published values, Figures 4 and 5."""
    import io

    from rich.console import Console

    from iclgd.report.shen import report_shen, shen_tables, shen_units

    tables = shen_tables(con, shen_units(con))
    paths = report_shen(con, Console(file=io.StringIO()), plots / "shen2024")
    figures = [Figure(path, "Figure 4: order sensitivity over epochs" if "fig4" in path.name else
                      f"Figure 5: accuracy and output overlap with ICL over epochs ({path.stem})")
               for path in paths if path.suffix == ".png"]
    return [Section("The paper's tables, ours beside the published values", tables), Section("Figures", figures)]


def _compare_sections(con, out: Path, run: Reproduction) -> list[Section]:
    """Dai et al. and Deutch et al.: the paper's tables beside the published numbers, every score per task and variant
    over runs, the figures (Deutch et al.'s 2-4; per-layer scores; accuracy)."""
    methods = list(dict.fromkeys(m for c in run.configs for m in c.methods))
    plots = out / "_plots"
    figures: list = []
    if run.paper == "deutch2024":
        stems = deutch.figure_stems(con, plots / "deutch2024")
        _, missing = deutch.draw_figures(con, stems)
        figures += [Figure(stems[name].with_suffix(".png"), CAPTIONS[name]) for name in stems] + missing
    per_layer = plot_per_layer(con, ["simaou_norm", "simaou", "simam_delta"], plots / "per_layer", by="variant")
    figures.append(Figure(per_layer[0], "SimAOU_norm, SimAOU and SimAM_Δ (ICL vs GD) per layer, by model variant "
                                        "(and task, where there are several); band: ± std over runs"))
    bars = plot_accuracy_bars(con, plots / "accuracy", by="task", where="variant = 'trained'",
                              methods=("zs", "icl", *methods))
    figures.append(Figure(bars[0], "Accuracy of ZS, ICL and FT per task (trained model; error bar: ± std over runs)"))
    tests = PairedScores(con).variant_tests()
    paired = [] if not tests else [Section(
        "Paired tests against the untrained variants (also in " + TESTS_FILE + ")",
        [variant_test_table(tests)])]
    if tests:
        write_variant_tests(tests, out / TESTS_FILE)
    return [Section("The paper's tables, ours beside the published numbers", [paper_table(con, run.paper)]),
            Section("Every score per task and variant, with its baselines",
                    [summary_table(con, ft_method=method, over=("seed", "order")) for method in methods]),
            *paired, Section("Figures", figures)]


def build_report(out: str | Path, run: Reproduction | LinregReproduction,
                 command: str | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` for the units of ``run`` (from run_reproduce); ``command``: the
    command line that made it, shown in the setting."""
    out = Path(out)
    from iclgd.synthetic.linreg.reproduce import LinregReproduction

    if isinstance(run, LinregReproduction):  # run folders, no compare units
        return write_report(out, f"iclgd reproduce {run.paper}: {run.model}", _linreg_sections(run, command))
    con, plots = open_results(out), out / "_plots"
    body = _shen_sections(con, plots) if run.paper == "shen2024" else _compare_sections(con, out, run)
    sections = [_setting(run, out, command), *body,
                Section("Configs (one YAML document per unit)", [Preformatted(config_text(out, run.configs))])]
    return write_report(out, f"iclgd reproduce {run.paper}: {run.model}", sections)


# von Oswald et al.'s numbers (spec/synthetic.md: the official code's setting, x ~ U(-0.5, 0.5)^10, N = 10):
# layers -> {column: text}; "≈" where the paper gives them as approximate.
VON_OSWALD_PUBLISHED = {1: {"TF loss": "0.2058", "GD loss": "0.2054", "η": "≈ 6.1", "GD++ loss": "= GD",
                            "cos(g_TF, g_GD)": "≈ 0.999"},
                        2: {"cos(g_TF, g_GD++)": "≈ 0.99"}}
LINREG_COLUMNS = ("TF loss", "GD loss", "η", "GD++ loss", "cos(g_TF, g_GD)", "cos(g_TF, g_GD++)")


def linreg_paper_table(summaries: dict[int, dict]) -> Table:
    """Per depth: the trained LSA's loss beside K GD steps (line-searched η) and GD++, and the cosine of their
    sensitivities; the published values beneath ours."""
    table = Table(title="Trained linear self-attention vs K steps of GD: ours vs published",
                  caption="eval loss 0.5·MSE on the run's fixed eval set; cos of the sensitivities g = ∂f/∂x_q "
                          "(mean over tasks); ours [95% bootstrap CI over the eval tasks]; K GD steps with one "
                          "line-searched η; GD++ with fitted (η_l, γ_l)")
    for name in ("layers", "source", *LINREG_COLUMNS):
        table.add_column(name, justify="left" if name in ("layers", "source") else "right")
    for layers, summary in sorted(summaries.items()):
        loss, vs_gd, vs_plus = summary["loss"], summary["vs_gd"].get("trained", {}), summary["vs_gd++"].get(
            "trained", {})
        ours = {"TF loss": with_ci(summary, ("trained", "", "loss"), loss["trained"]),
                "GD loss": with_ci(summary, ("gd", "", "loss"), loss["gd"]),
                "η": f"{summary['eta']['gd:eta_line_search']:.2f}",
                "GD++ loss": "= GD" if layers == 1 else with_ci(summary, ("gd++", "", "loss"), loss["gd++"]),
                "cos(g_TF, g_GD)": with_ci(summary, ("trained", "gd", "sensitivity_cosine"),
                                           vs_gd["sensitivity_cosine"]),
                "cos(g_TF, g_GD++)": "–" if layers == 1 else with_ci(summary, ("trained", "gd++", "sensitivity_cosine"),
                                                                      vs_plus["sensitivity_cosine"])}
        table.add_row(str(layers), "ours", *(ours[c] for c in LINREG_COLUMNS))
        if layers in VON_OSWALD_PUBLISHED:
            published = VON_OSWALD_PUBLISHED[layers]
            table.add_row(str(layers), "published", *(published.get(c, "") for c in LINREG_COLUMNS), style="dim")
    return table


def _linreg_sections(run: LinregReproduction, command: str | None) -> list[Section]:
    """von Oswald et al.: the setting, the paper's comparison beside the published numbers, each depth's table, Shen
    et al.'s critique of the one-layer run, the figures, each run's config."""

    configs = {layers: (path / "config.yaml").read_text() for layers, path in sorted(run.runs.items())}
    first = yaml.safe_load(next(iter(configs.values())))
    steps = ", ".join(f"{layers} layer{'s' * (layers > 1)}: {yaml.safe_load(text)['steps']} steps"
                      for layers, text in configs.items())
    # the versions that trained the first run (in its curve's Parquet metadata, beside its config)
    metadata = pq.read_schema(next(iter(run.runs.values())) / "curve.parquet").metadata or {}
    versions = {k.decode(): v.decode() for k, v in metadata.items() if k.decode() != "config"}
    setting = [
        f"Paper: {run.protocol.title} ({run.paper}).",
        f"Model: {run.model} (the paper's own setting: no pretrained model is involved).",
        f"Tasks: W ~ N(0, {first['weight_scale']:g}² I), x ~ U(−{first['input_range'] / 2:g}, "
        f"{first['input_range'] / 2:g})^{first['d']}, N = {first['n_context']} context pairs; "
        f"{first['eval_tasks']} seeded eval tasks; seed {first['seed']}.",
        f"Runs: {steps} (Adam, {first['batch_size']} fresh tasks per step)"
        + (", sized by --quick for 2 CPU cores" if run.quick else "") + "; trained by this call: "
        + (", ".join(run.trained) or "none (reused)") + ".",
        f"Run time: {run.wall_s:.0f} s for this call.",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        f"Command: {command}" if command else "",
    ]
    figures = []
    for layers, path in sorted(run.runs.items()):
        figures.append(Figure(path / "compare.png", f"{layers}-layer LSA: eval loss over training beside K GD "
                                                    "steps and GD++; alignment of the sensitivities"))
        if (path / "ood.png").is_file():
            figures.append(Figure(path / "ood.png", f"{layers}-layer LSA: loss out of distribution (larger inputs, "
                                                    "larger weights) beside GD"))
    sections = [Section("Setting", [line for line in setting if line]),
                Section("The paper's comparison, ours beside the published numbers",
                        [linreg_paper_table(run.summaries)]),
                Section("Each depth against GD and GD++", [compare_table(s) for _, s in sorted(run.summaries.items())])]
    if run.critique is not None:
        critique_dir = Path(run.critique["run"])
        sections.append(Section(
            "Shen et al.'s critique of the one-layer run: order, sparsity, weight noise",
            [order_table(run.critique["order"]), sparsity_table(run.critique["sparsity"],
                                                                run.critique["required_sparsity"]),
             perturbation_table(run.critique["perturbation"])]))
        figures += [Figure(critique_dir / f"{name}.png", caption) for name, caption in (
            ("order", "order sensitivity over context orderings"),
            ("sparsity", "sparsity of the trained and the hand-built matrices at thresholds δ"),
            ("perturbation", "loss and cos(g, g_GD) under weight noise ε"))]
    blocks = [Preformatted("---\n".join(f"# lsa{layers}\n{text}" for layers, text in configs.items()))]
    if run.analyses:  # what compare (with its OOD sweeps) and the critique ran with
        blocks.append(Preformatted(yaml.safe_dump(run.analyses, sort_keys=False)))
    sections += [Section("Figures", figures),
                 Section("Configs (each run's config.yaml, then the compare, OOD and critique settings)", blocks)]
    return sections
