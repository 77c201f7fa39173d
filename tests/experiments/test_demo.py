"""The shipped model really learns in context, and the demo runs end to end on it."""

import pytest

from iclgd.experiments.compare import run_compare
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.demo import DEMOS, demo_configs, run_demo
from iclgd.models.offline import SHIPPED_MODELS


def _icl_accuracy(cfg: CompareConfig) -> tuple[float, float]:
    rows = run_compare(cfg, show_progress=False).metrics
    acc = {r["method"]: r["value"] for r in rows if r["metric"] == "accuracy"}
    return acc["zs"], acc["icl"]


@pytest.mark.parametrize("name", ["icc-gpt2", "icc-exemplars-gpt2"])
def test_shipped_model_learns_in_context_and_untrained_does_not(tmp_path, name):
    common = dict(model=str(SHIPPED_MODELS[name]), task=DEMOS[name]["task"], shots=16, seed=1, lr=DEMOS[name]["lr"],
                  eval_size=100, kendall_examples=0, out=str(tmp_path))
    zs, icl = _icl_accuracy(CompareConfig(**common))
    assert icl >= 0.75 and icl - zs >= 0.2  # chance is 0.5 on this two-label held-out mapping
    _, untrained_icl = _icl_accuracy(CompareConfig(**common, untrained="all"))
    assert untrained_icl <= 0.7


def test_demo_writes_tables_and_plots(tmp_path):
    paths = run_demo(tmp_path, model="icc-gpt2", eval_size=20)
    assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size > 0 for p in paths)
    out = tmp_path / "icc-gpt2"
    units = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    assert len(units) == 4  # trained + three untrained variants
    import typer
    from typer.testing import CliRunner

    from iclgd.cli import compare as compare_cli

    app = typer.Typer()
    compare_cli.register(app)
    again = CliRunner().invoke(app, ["demo", "--model", "icc-gpt2", "--out", str(tmp_path), "--eval-size", "20",
                                     "--no-progress"], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output  # every unit done already: tables and plot again
    assert "results:" in again.output


def test_the_real_lm_demo_is_the_default_and_its_preset_is_valid(tmp_path):
    configs = demo_configs(tmp_path)
    assert [c.model for c in configs] == ["smollm2-135m"] * 4
    assert [c.untrained for c in configs] == [None, "all", "keep_layernorm", "trained_embeddings"]
    assert configs[0].task == "wordnet-noun" and configs[0].lr is not None  # no lr search inside the demo
