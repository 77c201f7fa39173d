"""Deutch et al.'s Figures 2-4: hand-set values in, the means the figures draw out; and a real compare's results."""

import numpy as np
import pytest
from rich.console import Console

from iclgd.report.deutch import grad_norm_grid, report_deutch
from iclgd.runner import UnitResult, layer_rows, metric_row, open_results, write_unit

LAYERS, STEPS = 3, 4


def _unit(task: str, offset: float, variant: str = "trained") -> list[dict]:
    """gd's norm before step j at layer l: offset + l + 10 j; lcgd's: (1 + offset) · 10^(−l) (decades apart)."""
    keys = dict(model="tiny", variant=variant, task=task, template=0, seed=1, order=0, k=4, true_k=4)
    rows = [metric_row(f"grad_norm_step{step}", offset + layer + 10 * step, 1, method="gd", layer=layer, **keys)
            for step in range(STEPS) for layer in range(LAYERS)]
    rows += [metric_row(f"grad_norm_step{step}", (1 + offset) * 10.0 ** -layer, 1, method="lcgd", layer=layer,
                        **keys) for step in range(STEPS) for layer in range(LAYERS)]
    rows += layer_rows("alpha", [0.1 + offset, 0.3 + offset, 0.5 + offset], 10, method="lcgd_vs_gd", **keys)
    for method, base in (("gd", 0.2), ("lcgd", 0.3)):
        rows += layer_rows("simaou", [base + offset] * LAYERS, 10, method=method, **keys)
        rows += layer_rows("simam_delta", [base] * LAYERS, 10, method=method, **keys)
    return rows


@pytest.fixture
def deutch_results(tmp_path):
    out = tmp_path / "results"
    for name, task, offset, variant in (("a", "sst2", 1.0, "trained"), ("b", "cb", 3.0, "trained"),
                                        ("c", "sst2", 0.0, "untrained:all")):
        write_unit(out, name, {"task": task}, UnitResult(metrics=_unit(task, offset, variant), predictions=[]))
    return out


def test_gradient_norm_grid_is_the_mean_over_units(deutch_results):
    con = open_results(deutch_results)
    grid = grad_norm_grid(con, "gd", where="variant = 'trained'")
    assert grid.shape == (LAYERS, STEPS)
    expected = np.array([[2.0 + layer + 10 * step for step in range(STEPS)] for layer in range(LAYERS)])
    np.testing.assert_allclose(grid, expected)  # offsets 1 and 3: mean 2
    np.testing.assert_allclose(grad_norm_grid(con, "lcgd", where="task = 'cb'")[:, 0], [4.0, 0.4, 0.04])
    assert grad_norm_grid(con, "gd", where="task = 'nope'").size == 0


def test_report_draws_figures_2_to_4_and_the_table(deutch_results, tmp_path):
    terminal = Console(record=True, width=300)
    paths = report_deutch(open_results(deutch_results), terminal, tmp_path / "fig" / "deutch2024")
    assert [p.name for p in paths] == [f"deutch2024_{n}.{ext}" for n in ("fig2", "fig3", "fig4") for ext in
                                       ("png", "pdf")]
    for path in paths:
        assert path.stat().st_size > 5_000
    text = terminal.export_text()
    assert "Deutch et al. 2024" in text and "not drawn" not in text


def test_report_says_which_figure_it_cannot_draw(tmp_path):
    keys = dict(model="tiny", variant="trained", task="sst2", template=0, seed=1, order=0, k=4, true_k=4)
    write_unit(tmp_path / "r", "u", {"task": "sst2"},
               UnitResult(metrics=layer_rows("simaou", [0.1, 0.2], 10, method="gd", **keys), predictions=[]))
    terminal = Console(record=True, width=300)
    paths = report_deutch(open_results(tmp_path / "r"), terminal, tmp_path / "deutch2024")
    assert [p.name for p in paths] == ["deutch2024_fig3.png", "deutch2024_fig3.pdf"]
    text = terminal.export_text()
    assert "Figure 2 not drawn: no α" in text and "Figure 4 not drawn: no gradient norms" in text


def test_figures_from_a_real_compare_with_gd_and_lcgd(tmp_path):
    """A tiny GPT-2 unit with GD and LCGD stores what the three figures read: α, per-layer scores, gradient norms
    (one step per demo, one row per layer)."""
    from iclgd.experiments.config import CompareConfig
    from iclgd.experiments.run import run_and_store
    from iclgd.models.tiny import save_tiny_model
    from iclgd.tasks import FIXTURES_DIR

    model = save_tiny_model("gpt2", tmp_path / "gpt2")
    cfg = CompareConfig(model=str(model), task="sst2", data_dir=str(FIXTURES_DIR), shots=4, seed=1, eval_size=6,
                        lr=1e-2, methods=["gd", "lcgd"], kendall_examples=0, batch_size=4, out=str(tmp_path / "out"))
    run_and_store(cfg, show_progress=False)
    con = open_results(tmp_path / "out")
    grids = {method: grad_norm_grid(con, method) for method in ("gd", "lcgd")}
    (true_k,), = con.sql("SELECT DISTINCT true_k FROM metrics").fetchall()
    assert grids["gd"].shape == grids["lcgd"].shape == (2, true_k)  # 2 layers, one step per demo
    assert np.isfinite(grids["gd"]).all() and (grids["lcgd"] > 0).all()
    paths = report_deutch(con, Console(record=True, width=300), tmp_path / "deutch2024")
    assert len(paths) == 6
