"""Reading a results folder: check every unit folder, then DuckDB views over all of them.

Views: ``metrics``, ``predictions`` and ``example_scores`` (``read_parquet([...], union_by_name=true)`` over the unit
folders)
and ``units`` (unit, path, created_at, record: the record.json text; use ``json_extract``). Folders whose
name starts with '.' or '_' are not units (temporary folders, ``_plots/``); files in ``<out>`` are ignored.
A damaged unit folder stops the read with a one-line UserError that names it and says to delete it and
rerun: finished units are skipped, so only the damaged one is recomputed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from iclgd.errors import UserError
from iclgd.runner.store import (
    EXAMPLE_SCORES_SCHEMA,
    METRICS_SCHEMA,
    PREDICTIONS_SCHEMA,
    RESULTS_FORMAT,
    UNIT_FILES,
    is_done,
)

# Every unit of this results format was written with all of them (check_unit_dir refuses other formats).
_REQUIRED_COLUMNS = {"metrics.parquet": METRICS_SCHEMA.names, "predictions.parquet": PREDICTIONS_SCHEMA.names,
                     "example_scores.parquet": EXAMPLE_SCORES_SCHEMA.names}


def _damaged(unit_dir: Path, what: str) -> UserError:
    return UserError(f"damaged unit folder {unit_dir}: {what}; delete that folder and rerun the sweep (finished "
                     "units are skipped)")


def read_record(unit_dir: Path) -> dict[str, Any]:
    """The parsed record.json of one unit folder (UserError if it does not parse)."""
    path = Path(unit_dir) / "record.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(unit_dir, f"{path.name} does not parse ({str(err).splitlines()[0]})") from None
    if not isinstance(record, dict):
        raise _damaged(unit_dir, f"{path.name} is not a JSON object")
    return record


def check_format(unit_dir: Path, record: dict[str, Any]) -> None:
    """UserError for a unit written in another results format (its ids, files and baselines differ)."""
    if record.get("results_format", 1) != RESULTS_FORMAT:
        raise UserError(f"{unit_dir} was written by another iclgd (results format {record.get('results_format', 1)!r}, "
                        f"this one reads {RESULTS_FORMAT}): its unit ids and baselines differ, so it cannot be mixed "
                        "with new units; move it out of the folder, or rerun the sweep in a fresh --out")


def check_unit_dir(unit_dir: Path) -> dict[str, Any]:
    """Check that a unit folder is complete and readable; return its record."""
    present = [name for name in UNIT_FILES if (unit_dir / name).is_file()]
    if not present:
        if unit_dir.is_dir() and next(unit_dir.rglob("record.json"), None) is not None:
            raise UserError(f"{unit_dir} is a results folder of its own, inside {unit_dir.parent}: pass it itself "
                            f"(e.g. iclgd report {unit_dir}); a results folder holds unit folders only")
        raise UserError(f"{unit_dir} is not an iclgd unit folder (no {', '.join(UNIT_FILES)}): move it out of "
                        f"{unit_dir.parent} or delete it")
    missing = [name for name in UNIT_FILES if name not in present]
    if "record.json" in present:  # a unit of another format lacks files of this one: say which it is first
        check_format(unit_dir, read_record(unit_dir))
    if missing:
        raise _damaged(unit_dir, f"{', '.join(missing)} missing")
    record = read_record(unit_dir)
    if record.get("unit", unit_dir.name) != unit_dir.name:
        raise _damaged(unit_dir, f"record.json belongs to unit {record['unit']!r} (was the folder renamed?)")
    for name, required in _REQUIRED_COLUMNS.items():
        try:
            schema = pq.read_schema(unit_dir / name)
        except (OSError, pa.ArrowException) as err:
            raise _damaged(unit_dir, f"{name} is not readable Parquet ({str(err).splitlines()[0]})") from None
        lacking = [column for column in required if column not in schema.names]
        if lacking:
            raise _damaged(unit_dir, f"{name} lacks the columns {lacking}")
    return record


def finished_configs(out: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, stored config) of each finished unit in ``out``, sorted; none where ``out`` is not a folder yet.
    What a run checks its folder against before it writes there (the report reads the whole folder)."""
    out = Path(out)
    folders = out.iterdir() if out.is_dir() else []
    for unit_dir in sorted(p for p in folders if p.is_dir() and not p.name.startswith((".", "_"))):
        if is_done(out, unit_dir.name):
            yield unit_dir, read_record(unit_dir).get("config", {})


def unit_dirs(out: Path) -> dict[Path, dict[str, Any]]:
    """Every unit folder of ``out`` (sorted) with its record, after checking them all."""
    out = Path(out)
    if not out.exists():
        raise UserError(f"results folder {out} does not exist: pass the --out folder of a sweep")
    if not out.is_dir():
        raise UserError(f"{out} is a file, not a results folder: pass the --out folder of a sweep")
    if (out / "record.json").is_file() and (out / "metrics.parquet").is_file():
        raise UserError(f"{out} is one unit's folder, not a results folder: pass the folder that holds it "
                        f"({out.parent})")
    dirs = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not dirs:
        raise UserError(f"{out} holds no iclgd results (no unit folders): pass the --out folder of a sweep, or run one")
    return {unit_dir: check_unit_dir(unit_dir) for unit_dir in dirs}


def _sql_paths(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def connect(units: dict[Path, dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views ``metrics`` (each FT method at its last epoch),
    ``metrics_by_epoch`` (every recorded epoch), ``predictions``, ``example_scores`` and ``units`` over ``units``
    (checked unit folders -> records)."""
    con = duckdb.connect()
    for view in ("metrics_by_epoch", "predictions", "example_scores"):
        files = _sql_paths([unit_dir / f"{view.removesuffix('_by_epoch')}.parquet" for unit_dir in units])
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({files}, union_by_name = true)")
    # What tables read: every value at its method's last epoch (a method's final state); the curves read every epoch.
    con.execute("CREATE VIEW metrics AS SELECT * FROM metrics_by_epoch "
                "QUALIFY epoch IS NULL OR epoch = max(epoch) OVER (PARTITION BY unit, method)")
    table = pa.table(
        {
            "unit": [unit_dir.name for unit_dir in units],
            "path": [str(unit_dir) for unit_dir in units],
            "created_at": [str(record.get("created_at", "")) for record in units.values()],
            "record": [json.dumps(record) for record in units.values()],
        }
    )
    con.register("_units_arrow", table)
    con.execute("CREATE VIEW units AS SELECT * FROM _units_arrow")
    return con


def open_results(out: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB views ``metrics``, ``predictions``, ``example_scores`` and ``units`` over every unit folder of ``out``
    (all checked)."""
    return connect(unit_dirs(out))


def open_unit(unit_dir: Path) -> duckdb.DuckDBPyConnection:
    """The same views over one unit folder."""
    unit_dir = Path(unit_dir)
    return connect({unit_dir: check_unit_dir(unit_dir)})


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """Run ``sql``; return (column names, rows). A DuckDB error becomes a one-line UserError; one that names a
    unit file says which unit folder to delete."""
    if not sql.strip():
        raise UserError('no query given: pass one, e.g. "SELECT method, metric, value FROM metrics LIMIT 5"')
    try:
        result = con.execute(sql, params or [])
        if result.description is None:  # a statement that returns no table
            return [], []
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.Error as err:
        lines = str(err).splitlines()
        # DuckDB's own hint ('Candidate bindings: "metric", ...', 'Did you mean ...') stays on the one line
        hint = next((line for line in lines[1:] if line.startswith(("Candidate bindings", "Did you mean"))), None)
        message = lines[0] + (f" ({hint})" if hint else "")
        path = re.search(r"""['"]?([^'"\s]+/(?:metrics|predictions|example_scores)\.parquet)""", str(err))
        if path:
            raise _damaged(Path(path.group(1)).parent, f"reading it failed ({message})") from None
        if isinstance(err, duckdb.InvalidInputException | duckdb.IOException):
            damaged = _unreadable_unit(con)  # a corrupt page: DuckDB's message may name no file
            if damaged is not None:
                raise _damaged(damaged[0], f"{damaged[1]} does not decode ({message})") from None
        raise UserError(f"query failed: {message}") from None


def _unreadable_unit(con: duckdb.DuckDBPyConnection) -> tuple[Path, str] | None:
    """(unit folder, file) of the first Parquet file of the connection's units that does not decode in full."""
    import pyarrow.parquet as pq

    try:
        paths = [Path(row[0]) for row in con.execute("SELECT path FROM units").fetchall()]
    except duckdb.Error:
        return None
    for unit_dir in paths:
        for name in ("metrics.parquet", "predictions.parquet", "example_scores.parquet"):
            try:
                pq.read_table(unit_dir / name)
            except (OSError, ValueError, pa.ArrowException):
                return unit_dir, name
    return None
