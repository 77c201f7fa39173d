"""`iclgd report --paper shen2024` on a results folder made by the real pipeline on a tiny LLaMA: three units (two
learning rates with order sensitivity and output metrics; one with FT on more demos than ICL). Every number the
tables and figures use is checked against a direct DuckDB query."""

import os
import subprocess
import sys

import pytest
from rich.console import Console

from iclgd.errors import UserError
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.run import run_and_store
from iclgd.experiments.sweep import expand, load_sweep
from iclgd.models.tiny import save_tiny_model
from iclgd.report import shen
from iclgd.runner.results import open_results
from iclgd.tasks import FIXTURES_DIR

METHODS = ["whole-gd-label", "whole-sgd2-label"]
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "shen2024")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("shen-report")
    model = save_tiny_model("llama", root / "llama")
    base = dict(model=str(model), task="sst2", data_dir=str(FIXTURES_DIR), shots=4, seed=1, eval_size=4, lr=0.5,
                methods=METHODS, epochs=2, record_epochs=[1, 2], output_metrics=True, orderings=2, batch_size=4,
                out=str(root / "out"), captures="none")
    for fields in (dict(), dict(lr=0.1), dict(ft_shots=7, orderings=1, output_metrics=False, methods=METHODS[:1])):
        run_and_store(CompareConfig(**{**base, **fields}), show_progress=False)
    return root / "out"


@pytest.fixture()
def con(out):
    return open_results(out)


def _one(con, sql, params=()):
    rows = con.execute(sql, list(params)).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]


UNIT_LR = "CAST(json_extract(u.record, '$.config.lr') AS DOUBLE)"
FT_SHOTS = "json_extract_string(u.record, '$.config.ft_shots')"


def test_units_and_their_settings_come_from_the_records(con):
    units = shen.shen_units(con)
    assert len(units) == 3
    more = [info for info in units.values() if info.ft_shots is not None]
    assert len(more) == 1 and more[0].ft_demos == 7 and not more[0].has_sen and not more[0].on_curves
    curves = [info for info in units.values() if info.ft_shots is None]
    assert sorted(info.lr for info in curves) == [0.1, 0.5]
    assert all(info.has_sen and info.has_output and info.on_curves and info.orderings == 2 for info in curves)
    assert all(info.method_lrs == {m: info.lr for m in METHODS} and info.ft_demos == info.k for info in curves)


def test_sen_rows_equal_direct_queries(con):
    rows = shen.sen_rows(con, shen.shen_units(con))
    assert {(row["method"], row["lr"]) for row in rows} == {(m, lr) for m in METHODS for lr in (0.1, 0.5)}
    for row in rows:
        expected = _one(con, "SELECT m.value FROM metrics m JOIN units u USING (unit) WHERE m.metric = "
                        f"'order_sensitivity' AND m.layer IS NULL AND m.method = ? AND {UNIT_LR} = ?",
                        [row["method"], row["lr"]])
        icl = _one(con, "SELECT m.value FROM metrics m JOIN units u USING (unit) WHERE m.metric = "
                   f"'order_sensitivity' AND m.layer IS NULL AND m.method = 'icl' AND {UNIT_LR} = ?", [row["lr"]])
        assert row["sen"].mean == pytest.approx(expected) and row["icl"].mean == pytest.approx(icl)
        assert row["n"] == 1 and row["epochs"] == {2} and row["sen"].ci is not None  # a lone unit: its interval
    gd = [row for row in rows if row["method"] == "whole-gd-label"]
    assert all(row["sen"].mean == 0.0 for row in gd)  # full-batch GD is order-invariant
    text = _render(shen.sen_table(rows))
    assert "published (≈)" in text and "0.10–0.15" in text and "0.01–0.05" in text


def test_more_data_rows_equal_direct_queries(con):
    rows = shen.more_data_rows(con, shen.shen_units(con))
    assert [(row["N"], row["lr"]) for row in rows] == [(7, 0.5)]  # Table 1 reads the ft_shots units alone
    other = {u: info for u, info in shen.shen_units(con).items() if info.ft_shots is None}
    rows += shen.more_data_rows(con, other)  # without any, every unit is a row (N = its true k)
    assert sorted((row["N"], row["lr"]) for row in rows) == sorted([(3, 0.1), (3, 0.5), (7, 0.5)])
    for row in rows:
        more = "IS NOT NULL" if row["N"] == 7 else "IS NULL"
        for method, value in row["accuracy"].items():
            expected = _one(con, "SELECT m.value FROM metrics m JOIN units u USING (unit) WHERE m.metric = 'accuracy' "
                            f"AND m.layer IS NULL AND m.method = ? AND {UNIT_LR} = ? AND {FT_SHOTS} {more}",
                            [method, row["lr"]])
            assert value.mean == pytest.approx(expected), (row["N"], method)
        assert row["k"] == {3} and row["epochs"] == {2} and row["lrs"] == {row["lr"]}
    assert set(next(row for row in rows if row["N"] == 7)["accuracy"]) == {"icl", "whole-gd-label"}
    text = _render(shen.more_data_table(rows))
    assert "N (FT demos)" in text and "FT whole-sgd2-label" in text and "512 demos" in text


def test_more_data_rows_show_a_methods_own_lr(con):
    """A method named with its lr (whole-gd-label@1e-3, the unit's lr None) shows that lr in Table 1, not "—"."""
    import dataclasses

    units = {u: dataclasses.replace(info, lr=None, method_lrs={"whole-gd-label": 1e-3})
             for u, info in shen.shen_units(con).items() if info.ft_shots is not None}
    (row,) = shen.more_data_rows(con, units)
    assert row["lr"] is None and row["lrs"] == {1e-3}
    assert "0.001" in _render(shen.more_data_table([row]))


def test_curves_and_icl_lines_equal_direct_queries(con):
    units = {unit: info for unit, info in shen.shen_units(con).items() if info.on_curves}
    for metric in ("fullvocab_accuracy", "to@10", "ocs@10", "order_sensitivity"):
        curves = shen.epoch_curves(con, metric, units)
        (panel,) = curves
        assert panel[1] == "sst2" and len(curves[panel]) == 4  # two methods x two learning rates
        for (method, lr), points in curves[panel].items():
            assert list(points) == [1, 2]
            for epoch, value in points.items():
                expected = _one(con, "SELECT m.value FROM metrics_by_epoch m JOIN units u USING (unit) WHERE m.metric "
                                "= ? AND m.layer IS NULL AND m.method = ? AND m.epoch = ? AND "
                                f"{UNIT_LR} = ? AND {FT_SHOTS} IS NULL",
                                [metric, method, epoch, lr])
                assert value.mean == pytest.approx(expected)
        # ICL's line: the mean over the units; for TO@10 and OCS@10 the ICL-vs-ICL floor, stored as "icl_vs_icl"
        floor = shen.icl_reference(con, metric, units)[panel]
        icl = "icl_vs_icl" if metric in ("to@10", "ocs@10") else "icl"
        expected = _one(con, "SELECT avg(value) FROM metrics WHERE metric = ? AND layer IS NULL AND method = ? "
                        f"AND unit IN ({', '.join('?' for _ in units)})", [metric, icl, *units])
        assert floor.mean == pytest.approx(expected) and floor.n == 2 and floor.std is not None


def test_report_prints_tables_and_writes_both_figures(con, tmp_path):
    terminal = Console(record=True, width=240)
    paths = shen.report_shen(con, terminal, tmp_path / "figs" / "shen")
    assert sorted(p.name for p in paths) == ["shen_fig4.pdf", "shen_fig4.png", "shen_fig5.pdf", "shen_fig5.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    text = terminal.export_text()
    assert "Figure 4: order sensitivity" in text and "Table 1: GD with more data" in text


def test_no_shen_data_is_a_user_error_and_writes_nothing(con, tmp_path):
    with pytest.raises(UserError, match="no Shen et al. results .* configs/shen2024/offline-fig4.yaml"):
        shen.report_shen(con, Console(), tmp_path / "figs" / "shen", where="task = 'cb'")
    assert not (tmp_path / "figs").exists()


def test_cli_end_to_end(out):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "iclgd", "report", str(out), "--paper", "shen2024"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("shen2024_fig4", "shen2024_fig5"):
        for suffix in (".png", ".pdf"):
            path = out / "_plots" / f"{name}{suffix}"
            assert f"wrote {path}" in proc.stdout and path.stat().st_size > 0
    assert "Shen et al. 2024, Figure 4" in proc.stdout and "Table 1" in proc.stdout
    open_results(out)  # the plot folder is not mistaken for a unit


@pytest.mark.parametrize("name, units", [("fig4", 1), ("fig5", 64), ("table1", 12)])
def test_configs_expand_to_valid_units(name, units):
    configs = expand(load_sweep(os.path.join(CONFIGS, f"{name}.yaml")))
    assert len({c.unit_id() for c in configs}) == units
    assert {c.model for c in configs} == {"huggyllama/llama-7b"} and all(c.epochs == 200 for c in configs)


def _render(table) -> str:
    terminal = Console(record=True, width=240)
    terminal.print(table)
    return terminal.export_text()


def test_table1_is_printed_only_with_ft_shots_units(con, tmp_path):
    ft_units = [unit for unit, info in shen.shen_units(con).items() if info.ft_shots is not None]
    terminal = Console(record=True, width=240)
    shen.report_shen(con, terminal, tmp_path / "figs" / "shen", where=f"unit <> '{ft_units[0]}'")
    text = terminal.export_text()
    assert "Table 1 not printed" in text and "Table 1: GD with more data" not in text
