"""`make demo`: Deutch et al.'s argument made concrete, offline, in a few minutes on a CPU.

iclgd's own pretrained small LM (shipped in the package; ICL really emerged in it) and its untrained
variants go through the same ZS / ICL / GD pipeline on a held-out in-context classification task. The
side-by-side table and the per-layer plot show how much of the ICL-GD "similarity" survives without any
training at all.
"""

from __future__ import annotations

from pathlib import Path

from iclgd.errors import UserError
from iclgd.experiments.compare import run_compare
from iclgd.experiments.config import CompareConfig, load_config
from iclgd.experiments.sweep import check_units
from iclgd.report.console import console
from iclgd.report.plots import plot_per_layer
from iclgd.report.tables import side_by_side_table
from iclgd.runner.results import open_results
from iclgd.runner.sweep import run_sweep

DEMO_MODEL = Path(__file__).resolve().parent.parent / "assets" / "icc-gpt2"
DEMO_TASK = "icc-heldout"
DEMO_FIELDS = dict(task=DEMO_TASK, shots=16, seed=1, lr=1e-2, methods=["gd", "lcgd"], eval_size=200,
                   kendall_examples=100, batch_size=50)
VARIANTS = (None, "all", "keep_layernorm", "trained_embeddings")


def demo_configs(out: str | Path, *, eval_size: int | None = None,
                 model: str | Path = DEMO_MODEL) -> list[CompareConfig]:
    fields = {**DEMO_FIELDS, "model": str(model), "out": str(out)}
    if eval_size is not None:
        fields["eval_size"] = eval_size
    return [load_config(None, {**fields, "untrained": variant}) for variant in VARIANTS]


def run_demo(out: str | Path, *, eval_size: int | None = None, model: str | Path = DEMO_MODEL) -> list[Path]:
    """Run the demo units (skipping finished ones), print the side-by-side table, write the plot."""
    if not Path(model).is_dir():
        raise UserError(f"the demo model is missing at {model}: reinstall iclgd, or rebuild it with "
                        "`iclgd pretrain --corpus icc --out <folder>`")
    configs = demo_configs(out, eval_size=eval_size, model=model)
    check_units(configs)
    run_sweep(configs, lambda cfg: run_compare(cfg, show_progress=False), out, key=lambda c: c.unit_id())
    con = open_results(Path(out))
    shell = console()
    for method in ("gd", "lcgd"):
        shell.print(side_by_side_table(con, by="variant", ft_methods=[method]))
    paths = plot_per_layer(con, ["simaou", "simaou_norm", "simam_delta"], Path(out) / "_plots" / "per_layer",
                           by="variant", method="gd")
    shell.print(f"results: {out}  plot: {', '.join(str(p) for p in paths)}")
    return paths
