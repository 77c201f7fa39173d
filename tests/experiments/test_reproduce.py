"""`iclgd reproduce`: the protocols' units, a resumable run on a tiny model, and its report (Markdown, and HTML that
a headless browser renders with every section and figure)."""

import json
import os
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from iclgd.errors import UserError
from iclgd.experiments.reproduce import run_reproduce, unit_configs
from iclgd.models.tiny import save_tiny_model
from iclgd.report.reproduce import build_report
from iclgd.tasks import FIXTURES_DIR


def test_deutch_units_are_three_runs_from_dais_seed_times_four_variants():
    trained, untrained = unit_configs("deutch2024", "KoboldAI/fairseq-dense-1.3B", ["sst2", "cb"], False, "out")
    assert [(c.task, c.seed, c.order) for c in trained] == [("sst2", 2, 0), ("sst2", 3, 1), ("sst2", 4, 2),
                                                           ("cb", 3, 0), ("cb", 4, 1), ("cb", 5, 2)]
    assert {(c.shots, c.eval_size, tuple(c.methods), c.lr) for c in trained} == {(32, 2000, ("gd", "lcgd"), None)}
    assert [c.untrained for c in untrained[:4]] == ["all", "keep_layernorm", "trained_embeddings",
                                                    "keep_layernorm_fairseq"]
    second = trained[1].model_copy(update={"model": "m"}).unit_id()
    _, untrained = unit_configs("deutch2024", "m", ["sst2"], False, "out", lrs={second: 0.02})
    assert [c.lr for c in untrained] == [None] * 4 + [0.02] * 4 + [None] * 4  # each run's trained lr, once known


def test_quick_sizes_and_dais_single_run():
    trained, untrained = unit_configs("deutch2024", "smollm2-135m", None, True, "out")
    assert [(c.task, c.seed, c.order) for c in trained] == [("wordnet-noun", 1, 0), ("wordnet-noun", 2, 1)]
    assert [c.untrained for c in untrained] == ["all", "all"]
    assert {(c.shots, c.eval_size, c.lr_search) for c in trained + untrained} == {(8, 100, "halving")}
    trained, untrained = unit_configs("dai2023", "m", ["sst5", "mr"], False, "out")
    assert [(c.task, c.seed, c.order, tuple(c.methods)) for c in trained] == [("sst5", 5, 0, ("gd",)),
                                                                              ("mr", 5, 0, ("gd",))]
    assert untrained == []


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    model = save_tiny_model("gpt2", tmp / "gpt2")
    overrides = {"data_dir": str(FIXTURES_DIR), "shots": 4, "eval_size": 6, "lr": 1e-2, "kendall_examples": 3,
                 "batch_size": 4}
    out = tmp / "out"
    info = run_reproduce("deutch2024", str(model), out, tasks=["sst2"], quick=True, overrides=overrides,
                         progress=False)
    return out, info, (str(model), overrides)


def test_reproduce_runs_the_units_and_a_rerun_reuses_them(reproduced):
    out, info, (model, overrides) = reproduced
    assert len(info.ran) == len(info.configs) == 4  # 2 runs x (trained, untrained:all)
    assert all((out / c.unit_id() / "record.json").exists() for c in info.configs)
    again = run_reproduce("deutch2024", model, out, tasks=["sst2"], quick=True, overrides=overrides, progress=False)
    assert again.ran == [] and [c.unit_id() for c in again.configs] == [c.unit_id() for c in info.configs]


def test_a_rerun_asking_for_more_captures_warns_once(reproduced, capsys):
    """The untrained units are checked before the trained ones run and again once their lr is known; where their
    ids did not change (an lr given), the second check must not repeat the first's warning."""
    out, info, (model, overrides) = reproduced
    capsys.readouterr()
    again = run_reproduce("deutch2024", model, out, tasks=["sst2"], quick=True,
                          overrides={**overrides, "captures": "full"}, progress=False)
    err = capsys.readouterr().err
    assert again.ran == []
    assert err.count("is done with captures compact") == 1, err
    assert f"(and {len(info.configs) - 1} more finished unit(s) of this run)" in err

def test_a_folder_holding_another_settings_units_is_refused_before_any_unit(reproduced):
    """The report reads the whole folder: another setting's run into it (here another eval size) is refused, naming
    a unit that is not its own, rather than reported beside them."""
    out, _, (model, overrides) = reproduced
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(UserError, match=r"holds unit .*, which is not one of this reproduction's .*give this run its "
                                        r"own --out"):
        run_reproduce("deutch2024", model, out, tasks=["sst2"], quick=True, overrides={**overrides, "eval_size": 5},
                      progress=False)
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize("variant", ["trained", "untrained"])
def test_a_unit_of_an_older_id_rule_is_refused(reproduced, tmp_path, variant):
    """A finished unit whose config is this run's but whose folder is not the id that config has today (a unit of an
    older id rule, e.g. output metrics before their floor ordering) would be pooled with its recomputed twin in the
    report: refused, trained or untrained."""
    out, info, (model, overrides) = reproduced
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    unit = next(c for c in info.configs if (c.untrained is None) == (variant == "trained")).unit_id()
    run_reproduce("deutch2024", model, copy, tasks=["sst2"], quick=True, overrides=overrides, progress=False)
    shutil.copytree(copy / unit, copy / (unit[:-12] + "0" * 12))  # the same config under another hash
    with pytest.raises(UserError, match=rf"holds unit {unit[:-12]}000000000000, which is not one of this "
                                        r"reproduction's .*an older iclgd's unit id"):
        run_reproduce("deutch2024", model, copy, tasks=["sst2"], quick=True, overrides=overrides, progress=False)

def test_report_markdown_has_the_papers_shape(reproduced):
    out, info, _ = reproduced
    md, page = build_report(out, info)
    text = md.read_text()
    for heading in ("## Setting", "## The paper's tables", "## Every score per task", "## Paired tests against the "
                    "untrained variants", "## Figures", "## Configs"):
        assert heading in text
    tests = pq.read_table(out / "_tables" / "untrained_tests.parquet").to_pylist()
    # 2 runs x (GD: 4 scores and Kendall; LCGD: 4 scores)
    assert len(tests) == 2 * (5 + 4) and {t["variant"] for t in tests} == {"untrained:all"}
    assert {t["count"] for t in tests} == {3, 6}  # Kendall: on kendall_examples
    assert all(t["beats"] == (t["ci_low"] > 0) for t in tests)
    assert "different model: the paper used KoboldAI/fairseq-dense-1.3B" in text
    assert "| SimAM_Δ GD | 1.3B | published | 0.15 |" in text  # the published row beside ours
    assert " ± " in text and "no ICL" in text
    for figure in ("deutch2024_fig2.png", "deutch2024_fig3.png", "deutch2024_fig4.png", "per_layer.png"):
        assert f"](_plots/{figure})" in text and (out / "_plots" / figure).exists()
    assert text.count("\nunit: ") == 4 and "lr: 0.01" in text
    assert page.read_text().count("data:image/png;base64,") == 5


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = """<!DOCTYPE html><html><body><iframe id="r" src="report.html" width="1200" height="900"></iframe><script>
document.getElementById("r").addEventListener("load", () => {
  const doc = document.getElementById("r").contentDocument, images = Array.from(doc.images);
  const out = document.createElement("pre"); out.id = "result";
  out.textContent = JSON.stringify({sections: Array.from(doc.querySelectorAll("h2")).map(h => h.textContent),
    images: images.length, loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    tables: doc.querySelectorAll("table").length});
  document.body.appendChild(out);
});</script></body></html>"""


@pytest.mark.skipif(BROWSER is None and not os.environ.get("ICLGD_REQUIRE_BROWSER"),
                    reason="no Chromium (CI installs Debian's and sets ICLGD_REQUIRE_BROWSER)")
def test_report_html_renders_in_a_headless_browser_with_every_section_and_figure(reproduced):
    """The page opens from disk with no server: a probe page beside it loads it in an iframe and reports what the
    browser rendered (the headings, the tables, and how many images decoded)."""
    assert BROWSER is not None, "ICLGD_REQUIRE_BROWSER is set but no Chromium is installed"
    out, info, _ = reproduced
    build_report(out, info)
    probe = out / "_probe.html"
    probe.write_text(PROBE)
    try:
        done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=120, check=True)
    finally:
        probe.unlink()
    marker = '<pre id="result">'
    assert marker in done.stdout, done.stderr[-2000:]
    result = json.loads(done.stdout.split(marker)[1].split("</pre>")[0].replace("&amp;", "&").replace("&#39;", "'")
                        .replace("&quot;", '"'))
    assert result["sections"] == ["Setting", "The paper's tables, ours beside the published numbers",
                                  "Every score per task and variant, with its baselines",
                                  "Paired tests against the untrained variants (also in "
                                  "_tables/untrained_tests.parquet)",
                                  "Figures", "Configs (one YAML document per unit)"]
    assert result["images"] == result["loaded"] == 5 and result["tables"] == 4


def test_shen_reproduce_writes_its_tables_and_figures(tmp_path):
    """Shen et al.'s quick protocol on a tiny model (2 epochs instead of 5-10): the Sen summary and Table 1 beside the
    published values, Figures 4 and 5."""
    model = save_tiny_model("gpt2", tmp_path / "gpt2")
    overrides = {"data_dir": str(FIXTURES_DIR), "shots": 4, "eval_size": 6, "batch_size": 4, "epochs": 2}
    info = run_reproduce("shen2024", str(model), tmp_path / "out", tasks=["sst2"], quick=True, overrides=overrides,
                         progress=False)
    assert len(info.ran) == 4  # Figure 4, Figure 5, Table 1 at N = 8 and 32
    md, page = build_report(tmp_path / "out", info)
    text = md.read_text()
    assert "order sensitivity Sen" in text and "published (≈)" in text and "GD with more data" in text
    assert "](_plots/shen2024_fig4.png)" in text and "](_plots/shen2024_fig5.png)" in text
    assert "different model: the paper used huggyllama/llama-7b" in text
    assert page.read_text().count("data:image/png;base64,") == 2


def test_vonoswald_reproduce_trains_compares_critiques_and_reports(tmp_path):
    """The linreg protocol at toy sizes: each depth trained and compared with GD / GD++, the one-layer run critiqued,
    the report beside the published numbers; a rerun trains nothing."""
    from iclgd.synthetic.linreg.reproduce import LinregProtocol, run_linreg_reproduce

    toy = LinregProtocol("von Oswald et al. 2023", depths=(1, 2), quick_depths=(1, 2),
                         train={"steps": 40, "eval_tasks": 64, "batch_size": 64, "eval_every": 20},
                         compare={"ood_tasks": 8, "input_ranges": (0.5, 2.0, 0.5), "weight_scales": (0.5, 5.0, 1.5),
                                  "fit_iterations": 5},
                         critique={"order_tasks": 16, "variant_steps": 5, "noise_tasks": 16, "noise_repeats": 1,
                                   "orderings": 3})
    run = run_linreg_reproduce("vonoswald2023", toy, tmp_path / "out", progress=False)
    assert sorted(run.runs) == [1, 2] and run.trained == ["lsa1", "lsa2"] and run.critique is not None
    assert set(run.summaries[2]["loss"]) >= {"trained", "gd", "gd++"}
    md, page = build_report(tmp_path / "out", run, "iclgd reproduce vonoswald2023")
    text = md.read_text()
    for heading in ("## Setting", "## The paper's comparison", "## Each depth against GD", "## Shen et al.'s critique",
                    "## Figures", "## Configs"):
        assert heading in text
    assert "| 1 | published | 0.2058 | 0.2054 | ≈ 6.1 | = GD | ≈ 0.999 |" in text
    ours = next(line for line in text.splitlines() if line.startswith("| 1 | ours |"))
    assert f"{run.summaries[1]['loss']['trained']:.4f}" in ours
    assert page.read_text().count("data:image/png;base64,") == 2 * 2 + 3  # compare + ood per depth; the critique's
    assert "ood_tasks: 8" in text and "variant_steps: 5" in text  # what compare, OOD and critique ran with
    again = run_linreg_reproduce("vonoswald2023", toy, tmp_path / "out", progress=False)
    assert again.trained == [] and again.summaries[1]["loss"] == run.summaries[1]["loss"]


def test_reproduce_units_past_the_eval_split_take_the_ids_a_compare_would():
    """dai2023 --quick asks 100 eval rows; sst2's fixture holds 24: the unit is the whole split's, with the id a
    compare or a sweep of the same fields gets (one unit, not two in one --out), for trained and untrained alike."""
    from iclgd.experiments.compare import capped_eval_sizes
    from iclgd.experiments.config import load_config
    from iclgd.experiments.reproduce import unit_configs
    from iclgd.tasks import FIXTURES_DIR

    trained, untrained = unit_configs("dai2023", "m", ["sst2"], True, "out", overrides={"data_dir": str(FIXTURES_DIR)})
    assert {c.eval_size for c in trained + untrained} == {24}
    fields = {**trained[0].model_dump(), "eval_size": 100}
    assert capped_eval_sizes([load_config(None, fields)])[0].unit_id() == trained[0].unit_id()


def test_a_rerun_refuses_an_untrained_unit_whose_task_changed(tmp_path):
    """An untrained unit's id holds the lr its trained unit searched, known only once that unit has run: the check
    of finished units must see it too, not only the trained ones."""
    model = save_tiny_model("gpt2", tmp_path / "gpt2")
    overrides = {"data_dir": str(FIXTURES_DIR), "shots": 4, "eval_size": 6, "kendall_examples": 0, "batch_size": 4,
                 "lr_search": "halving", "lr_search_rows": 8}
    out = tmp_path / "out"
    info = run_reproduce("deutch2024", str(model), out, tasks=["sst2"], quick=True, overrides=overrides,
                         progress=False)
    untrained = next(c for c in info.configs if c.untrained)
    record_file = out / untrained.unit_id() / "record.json"
    record = json.loads(record_file.read_text())
    record["template"] = "OLD " + record["template"]  # as if the task file's template had changed since
    record_file.write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"changed since unit .*untrained.* \(what differs: template\)"):
        run_reproduce("deutch2024", str(model), out, tasks=["sst2"], quick=True, overrides=overrides, progress=False)
