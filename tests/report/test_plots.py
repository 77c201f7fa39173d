import pytest

from iclgd.errors import UserError
from iclgd.report import plot_accuracy_bars, plot_per_layer
from iclgd.runner import UnitResult, layer_rows, open_results, write_unit


def _check(paths):
    png, pdf = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_per_layer_png_and_pdf(con, tmp_path):
    paths = plot_per_layer(con, ["simaou", "simam_delta", "simam_before"], tmp_path / "fig" / "per_layer")
    assert [p.name for p in paths] == ["per_layer.png", "per_layer.pdf"]
    _check(paths)


def test_per_layer_alpha_is_found_under_its_own_method(tmp_path):
    """α is stored under 'lcgd_vs_gd', neither the plotted FT method nor 'icl'."""
    keys = dict(model="tiny", variant="trained", task="sst2", template=0, seed=1, order=0, k=4, true_k=4)
    rows = (layer_rows("alpha", [0.2, 0.4, 0.6], 10, method="lcgd_vs_gd", **keys)
            + layer_rows("simam_delta", [0.3, 0.3, 0.3], 10, method="gd", **keys))
    write_unit(tmp_path / "out", "u1", {"task": "sst2", "seed": 1}, UnitResult(metrics=rows, predictions=[]))
    _check(plot_per_layer(open_results(tmp_path / "out"), ["alpha", "simam_delta"], tmp_path / "alpha"))


def test_accuracy_bars_png_and_pdf(con, tmp_path):
    _check(plot_accuracy_bars(con, tmp_path / "accuracy", where="variant = 'trained'"))


def test_plot_errors(con, tmp_path):
    with pytest.raises(UserError, match="no per-layer values of metric 'nope'"):
        plot_per_layer(con, ["nope"], tmp_path / "x")
    with pytest.raises(UserError, match="choose among"):
        plot_per_layer(con, ["simaou"], tmp_path / "x", by="value; DROP")
    with pytest.raises(UserError, match="nothing to plot"):
        plot_accuracy_bars(con, tmp_path / "x", methods=("gdx",))
    assert not (tmp_path / "x.png").exists()


def test_bars_and_curves_never_pool_units_measured_under_different_conditions(con, tmp_path):
    """Seeds are averaged; a trained and an untrained model, or two tasks, get their own bar or curve."""
    from iclgd.report.plots import accuracy_bars, group_label
    from iclgd.runner import metric_row

    groups, values, extra = accuracy_bars(con, "task", ("zs", "icl", "gd"))
    assert groups == ["cb", "sst2", "toy"] and extra == []  # only trained units hold accuracies
    assert values[("sst2", "icl")] == pytest.approx((80.0, 70.0, 90.0))  # the mean ± one std over seeds
    # the fixture's per-layer SimAOU: trained on three tasks, untrained variants on sst2 only
    _, extra = group_label(con, "variant", "metric = ? AND method = ?", ["simaou", "gd"])
    assert extra == ["task"]

    for variant, icl in (("trained", 0.8), ("untrained:all", 0.3)):
        for seed in (1, 2):
            keys = dict(model="m", variant=variant, task="t", template=0, seed=seed, order=0, k=4, true_k=4)
            rows = [metric_row("accuracy", icl + 0.01 * seed, 10, method="icl", **keys),
                    metric_row("accuracy", 0.5, 10, method="zs", **keys)]
            write_unit(tmp_path / "out", f"{variant.replace(':', '_')}-{seed}", {"seed": seed},
                       UnitResult(metrics=rows, predictions=[]))
    groups, values, extra = accuracy_bars(open_results(tmp_path / "out"), "task", ("zs", "icl"))
    assert groups == ["t trained", "t untrained:all"] and extra == ["variant"]
    assert values[("t trained", "icl")][0] == pytest.approx(81.5)
    assert values[("t untrained:all", "icl")][0] == pytest.approx(31.5)
    _check(plot_accuracy_bars(open_results(tmp_path / "out"), tmp_path / "bars", methods=("zs", "icl")))


def test_the_legend_title_names_the_label_parts_in_their_order(con, tmp_path, monkeypatch):
    """A curve per seed, split by variant too: its label reads "1 trained", so the title reads "seed, variant"."""
    from matplotlib.figure import Figure

    legends = []
    original = Figure.legend
    monkeypatch.setattr(Figure, "legend", lambda self, *a, **kw: legends.append((a, kw)) or original(self, *a, **kw))
    plot_per_layer(con, ["simaou"], tmp_path / "by-seed", by="seed", where="task = 'sst2'")
    (handles, labels), options = legends[0]
    assert options["title"] == "seed, variant" and "1 trained" in labels and "1 untrained:all" in labels
