import subprocess
import sys

import pytest

from iclgd.errors import UserError
from iclgd.runner import open_results, query, run_sweep, unit_id, write_unit
from tests.runner.helpers import fake_result

CONFIGS = [{"task": task, "k": 4, "seed": seed} for task in ("sst2", "cb") for seed in (1, 2)]


@pytest.fixture
def results(tmp_path):
    run_sweep(CONFIGS, fake_result, tmp_path / "out", progress=False)
    return tmp_path / "out"


def test_views_over_all_units(results):
    con = open_results(results)
    assert con.execute("SELECT count(DISTINCT unit) FROM metrics").fetchone()[0] == 4
    # per unit: 2 accuracy rows + 2 simaou layers + 1 simaou mean
    assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == 4 * 5
    mean = con.execute("SELECT value FROM metrics WHERE metric = 'simaou' AND layer IS NULL AND unit = ?",
                       [unit_id(CONFIGS[1])]).fetchone()[0]
    assert mean == pytest.approx((0.2 + 0.6) / 2)  # seed 2: layers 0.1*2, 0.3*2
    assert con.execute("SELECT count(*) FROM predictions WHERE correct").fetchone()[0] == 8
    seeds = con.execute("SELECT json_extract(record, '$.config.seed')::INT FROM units ORDER BY 1").fetchall()
    assert [s for (s,) in seeds] == [1, 1, 2, 2]


def test_nan_values_are_found_by_isnan(tmp_path):
    """A NaN value (Rec2FTP where FT fixed nothing) is found by `isnan(value)`: with pyarrow's min/max statistics
    (which leave NaN out) DuckDB answered that filter from the statistics, with no rows."""
    from iclgd.runner.store import metric_row

    result = fake_result({"seed": 1})
    result.metrics.append(metric_row("rec2ftp", float("nan"), 0, method="gd", **{
        k: result.metrics[0][k] for k in ("model", "variant", "task", "template", "seed", "order", "k", "true_k")}))
    write_unit(tmp_path, "u1", {"seed": 1}, result)
    con = open_results(tmp_path)
    assert con.execute("SELECT metric FROM metrics WHERE isnan(value)").fetchall() == [("rec2ftp",)]
    assert con.execute("SELECT count(*) FROM metrics WHERE NOT isnan(value)").fetchone()[0] == 5


def test_extra_columns_union_by_name_and_ignored_folders(results):
    result = fake_result({"seed": 5})
    for row in result.metrics:
        row["epoch"] = 7
    write_unit(results, "extra", {"seed": 5}, result)
    (results / ".tmp-half-999999999").mkdir()
    (results / "_plots").mkdir()
    (results / "sweep.yaml").write_text("x: 1\n")
    columns, rows = query(open_results(results), "SELECT count(*), count(epoch) FROM metrics")
    assert rows == [(25, 5)]


def _break(results, how: str) -> str:
    unit_dir = results / unit_id(CONFIGS[0])
    if how == "missing":
        (unit_dir / "predictions.parquet").unlink()
    elif how == "unreadable":
        (unit_dir / "metrics.parquet").write_bytes(b"not parquet at all")
    elif how == "record":
        (unit_dir / "record.json").write_text('{"unit": ')
    elif how == "stranger":
        unit_dir = results / "notes"
        unit_dir.mkdir()
        (unit_dir / "todo.txt").write_text("x")
        return "notes"
    return unit_dir.name


@pytest.mark.parametrize("how,message", [
    ("missing", "predictions.parquet missing"),
    ("unreadable", "metrics.parquet is not readable Parquet"),
    ("record", "record.json does not parse"),
    ("stranger", "is not an iclgd unit folder"),
])
def test_damaged_folders_name_the_path_and_the_fix(results, how, message):
    name = _break(results, how)
    with pytest.raises(UserError, match=message) as error:
        open_results(results)
    text = str(error.value)
    assert str(results / name) in text and "delete" in text and "\n" not in text


def test_a_results_folder_inside_another_is_named_as_such(results):
    """`iclgd report results/` with results/c1 (a compare's --out) inside: pass results/c1 itself."""
    import shutil

    shutil.copytree(results, results / "c1", ignore=shutil.ignore_patterns("c1"))
    with pytest.raises(UserError, match="is a results folder of its own") as error:
        open_results(results)
    assert f"iclgd report {results / 'c1'}" in str(error.value) and "delete" not in str(error.value)
    assert open_results(results / "c1") is not None


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: p.mkdir(), "holds no iclgd results"),
])
def test_not_a_results_folder(tmp_path, setup, message):
    out = tmp_path / "out"
    setup(out)
    with pytest.raises(UserError, match=message):
        open_results(out)


def test_renamed_unit_folder_is_caught(results):
    (results / unit_id(CONFIGS[0])).rename(results / "renamed")
    with pytest.raises(UserError, match="renamed"):
        open_results(results)


def test_bad_sql_is_a_user_error(results):
    with pytest.raises(UserError, match="query failed") as err:
        query(open_results(results), "SELECT metrc FROM metrics")
    assert 'Candidate bindings: "metric"' in str(err.value) and "\n" not in str(err.value)  # DuckDB's hint, one line


def test_cli_exit_status_2_and_one_line(results):
    _break(results, "record")
    done = subprocess.run([sys.executable, "-m", "iclgd", "sql", str(results), "SELECT 1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "record.json does not parse" in done.stderr


def test_units_of_another_results_format_are_refused_not_mixed(results):
    import json

    record_path = next(p for p in results.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) / "record.json"
    record = json.loads(record_path.read_text())
    del record["results_format"]  # a unit written before formats were numbered (format 1)
    record_path.write_text(json.dumps(record))
    with pytest.raises(UserError, match="results format 1"):
        open_results(results)


def test_a_format_3_unit_is_named_as_such_not_as_damaged(results, tmp_path):
    """A unit of the previous format lacks example_scores.parquet: report and resume name its format."""
    import json
    import shutil

    from iclgd.runner import run_sweep
    from tests.runner.helpers import fake_result

    unit = next(p for p in results.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    old = tmp_path / "old"
    shutil.copytree(results, old)
    (old / unit.name / "example_scores.parquet").unlink()
    record = json.loads((old / unit.name / "record.json").read_text())
    (old / unit.name / "record.json").write_text(json.dumps({**record, "results_format": 3}))
    with pytest.raises(UserError, match="results format 3, this one reads 4"):
        open_results(old)
    config = record["config"]
    with pytest.raises(UserError, match="results format 3"):
        run_sweep([config], fake_result, old, progress=False)


def test_a_decoding_error_that_names_no_file_is_traced_to_its_unit(results, monkeypatch):
    """DuckDB's message for a corrupt page may name no file ('Variable-length int over 10 bytes'): the unit files
    are then decoded one by one and the first that fails is named, with the fix; with none damaged, the error is the
    query's."""
    import duckdb

    con = open_results(results)
    damaged = results / unit_id(CONFIGS[2]) / "predictions.parquet"
    intact = damaged.read_bytes()
    real_execute = duckdb.DuckDBPyConnection.execute

    def corrupt_page(self, sql, params=None):
        if "FROM metrics" in sql:
            raise duckdb.InvalidInputException("Invalid Input Error: Variable-length int over 10 bytes.")
        return real_execute(self, sql, params or [])

    monkeypatch.setattr(duckdb.DuckDBPyConnection, "execute", corrupt_page)
    damaged.write_bytes(intact[:-20])
    with pytest.raises(UserError, match=rf"damaged unit folder {damaged.parent}: predictions.parquet does not decode "
                                        r"\(Invalid Input Error: Variable-length int"):
        query(con, "SELECT avg(value) FROM metrics")
    damaged.write_bytes(intact)
    with pytest.raises(UserError, match="query failed: Invalid Input Error: Variable-length int"):
        query(con, "SELECT avg(value) FROM metrics")
