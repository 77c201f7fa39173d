"""Tables from a results folder: a summary per unit (or over seeds) and each paper's tables beside its numbers.

Every number is the layer-null row of ``metrics`` (the mean over layers, or a layer-less metric).
Comparison metrics are read under ``method`` = the FT method ICL is compared with (``gd`` by default);
those that do not depend on FT (SimAM before FT, the Rec2FTP chance level, Kendall's random baseline)
are also accepted under ``method = 'icl'``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from rich.table import Table

from iclgd.errors import UserError
from iclgd.experiments.config import NOT_SETTINGS
from iclgd.report.paired import COMPARED, PairedScores
from iclgd.report.published import PAPERS, Paper, Row
from iclgd.runner.results import query

FT = "{ft}"  # placeholder for the FT method in column specs
# Metrics that do not depend on the FT method: also read under method "icl".
FT_INDEPENDENT = frozenset({"simam_before", "rec2ftp_chance", "kendall_random", "simaou_norm_random", "simaou_random"})


@dataclass(frozen=True)
class Column:
    """A summary column: ``metric`` read under the first of ``methods`` that a unit has."""

    header: str
    metric: str
    methods: tuple[str, ...]
    scale: float = 1.0
    digits: int = 3


SUMMARY_COLUMNS = (
    Column("acc majority", "accuracy", ("majority",), 100, 1),
    Column("acc ZS", "accuracy", ("zs",), 100, 1),
    Column("acc ICL", "accuracy", ("icl",), 100, 1),
    Column("acc FT", "accuracy", (FT,), 100, 1),
    Column("fv-acc ZS", "fullvocab_accuracy", ("zs",), 100, 1),
    Column("fv-acc ICL", "fullvocab_accuracy", ("icl",), 100, 1),
    Column("fv-acc FT", "fullvocab_accuracy", (FT,), 100, 1),
    Column("Rec2FTP", "rec2ftp", (FT,), 1, 2),
    Column("Rec2FTP chance", "rec2ftp_chance", (FT, "icl"), 1, 2),
    Column("SimAOU_norm", "simaou_norm", (FT,)),
    Column("SimAOU_norm rand", "simaou_norm_random", (FT, "icl")),
    Column("SimAOU_norm rand-dir", "simaou_norm_random_direction", (FT,)),
    Column("SimAOU", "simaou", (FT,)),
    Column("SimAOU rand", "simaou_random", (FT, "icl")),
    Column("SimAOU rand-dir", "simaou_random_direction", (FT,)),
    Column("SimAM before", "simam_before", (FT, "icl")),
    Column("SimAM after", "simam", (FT,)),
    Column("SimAM_Δ", "simam_delta", (FT,)),
    Column("Kendall", "kendall", (FT,)),
    Column("Kendall rand", "kendall_random", (FT, "icl")),
    Column("α", "alpha", ()),  # any method: LCGD vs GD
    # Shen et al.'s output metrics beside their noise floor (ICL vs ICL under another order), and order sensitivity.
    # († on TO@10 / OCS@10: not above the floor. KL and JS, where more means further apart, stay in the Parquet.)
    Column("TO@10", "to@10", (FT,)),
    Column("TO@10 ICL-ICL", "to@10", ("icl_vs_icl",)),
    Column("OCS@10", "ocs@10", (FT,)),
    Column("OCS@10 ICL-ICL", "ocs@10", ("icl_vs_icl",)),
    Column("Sen ICL", "order_sensitivity", ("icl",), 1, 4),
    Column("Sen FT", "order_sensitivity", (FT,), 1, 4),
)

ACCURACY_COLUMNS = SUMMARY_COLUMNS[:3]  # majority, ZS, ICL: whether a unit shows ICL (shows_icl)
UNIT_KEYS = ("model", "variant", "task", "template", "k", "seed", "order", "setting", "unit")
# What --over may average over: never the variant (a trained model and its untrained variants are what is compared).
GROUPABLE = ("seed", "order", "template", "k", "task", "model")
# The config field behind each key column; "setting" names the other config fields (lr, epochs, ft_shots, methods, ...)
# in which pooled units differ beyond what the pooled-over columns decide (split_by_setting): never averaged across.
KEY_FIELDS = {"model": "model", "variant": "untrained", "task": "task", "template": "template", "k": "shots",
              "seed": "seed", "order": "order"}


def where_clause(where: str | None) -> str:
    """A user's ``--where`` filter as a parenthesised SQL condition (TRUE for none)."""
    return f"({where})" if where else "TRUE"


@dataclass
class Cell:
    """Mean ± std (ddof=1) over ``n`` units (std None when n < 2); for one unit, its 95% bootstrap interval over
    eval examples when it has one. ``units``: the units of the row, where some have no finite value (NaN: Rec2FTP
    where FT fixed nothing), which the text then names: "(1 of 3)"."""

    mean: float
    std: float | None
    n: int
    ci: tuple[float, float] | None = None
    below_baseline: bool = False  # the score does not beat one of its baselines (BELOW_BASELINE_NOTE)
    units: int | None = None

    def text(self, scale: float = 1.0, digits: int = 3) -> str:
        mark = BELOW_BASELINE_MARK if self.below_baseline else ""
        mean = f"{self.mean * scale:.{digits}f}"
        of = f" ({self.n} of {self.units})" if self.units is not None and self.units > self.n else ""
        if self.std is not None:
            return f"{mean}{mark} ± {self.std * scale:.{digits}f}{of}"
        if self.ci is not None:
            return f"{mean}{mark} [{self.ci[0] * scale:.{digits}f}, {self.ci[1] * scale:.{digits}f}]{of}"
        return mean + mark + of


BELOW_BASELINE_MARK = "†"
BELOW_BASELINE_NOTE = ("† not above a baseline: the paired 95% bootstrap CI of (score − baseline) over eval examples "
                       "(pooled over a row's units) does not lie above 0; baselines: Dai's random, the random weight "
                       "direction, SimAM before FT, Kendall's random, the untrained variants of the same config "
                       "(for TO@10 and OCS@10 the ICL-vs-ICL floor)")


def cell(values: Sequence[float], cis: Sequence[tuple | None] = ()) -> Cell | None:
    """Mean and sample std of the finite ``values`` (with the interval of a lone value); None if there are none."""
    pairs = [(v, ci) for v, ci in zip(values, list(cis) + [None] * (len(values) - len(cis)), strict=True)
             if v is not None and math.isfinite(v)]
    if not pairs:
        return None
    finite = [v for v, _ in pairs]
    lone_ci = pairs[0][1] if len(pairs) == 1 and pairs[0][1] is not None and None not in pairs[0][1] else None
    return Cell(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None, len(finite),
                lone_ci, units=len(values))


def _unit_values(con: duckdb.DuckDBPyConnection, where: str | None) -> dict[str, dict[str, Any]]:
    """unit -> {key columns..., "true_k", "values": {(metric, method): value}} from the layer-null rows."""
    columns, rows = query(
        con,
        'SELECT unit, model, variant, task, template, k, seed, "order", true_k, metric, method, value, ci_low, '
        f"ci_high FROM metrics WHERE layer IS NULL AND {where_clause(where)} ORDER BY unit",
    )
    units: dict[str, dict[str, Any]] = {}
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        unit = units.setdefault(record["unit"], {key: record.get(key) for key in UNIT_KEYS} | {"true_k": set(),
                                                                                              "values": {}, "cis": {}})
        unit["true_k"].add(record["true_k"])
        unit["values"][(record["metric"], record["method"])] = record["value"]
        unit["cis"][(record["metric"], record["method"])] = (record["ci_low"], record["ci_high"])
    configs = {unit: json.loads(record).get("config", {}) for unit, record in
               con.execute("SELECT unit, record FROM units").fetchall() if unit in units}
    for name, unit in units.items():
        config = configs.get(name, {})
        unit["config"] = {name: json.dumps(value, sort_keys=True) for name, value in config.items()
                          if name not in {*NOT_SETTINGS, *KEY_FIELDS.values()}}
    return units


def split_by_setting(units: list[dict[str, Any]], over: Sequence[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """A group of units pooled over the ``over`` columns, split where they differ in a config field that is no key
    column and that the ``over`` columns do not decide: two units of one seed at lr 1e-2 and 5e-2 are two settings,
    while an lr searched per seed (or inherited from the seed's trained unit) or an eval size capped per task, one
    value per seed or task, is pooled like the seed or task. Returns (setting text, units) pairs."""
    names = sorted({name for unit in units for name in unit["config"]})
    independent = []
    for name in names:
        by_over: dict[tuple, set] = {}
        for unit in units:
            by_over.setdefault(tuple(str(unit[key]) for key in over), set()).add(unit["config"].get(name))
        if any(len(values) > 1 for values in by_over.values()):
            independent.append(name)
    parts: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        text = ", ".join(f"{name}={_setting_text(unit['config'].get(name))}" for name in independent)
        parts.setdefault(text, []).append(unit)
    return sorted(parts.items())


def _setting_text(value: str | None) -> str:
    value = json.loads(value) if value is not None else None
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _pick(values: dict[tuple[str, str], Any], column: Column, ft_method: str) -> Any:
    """The value (or interval) of ``column`` in one unit's ``values``, keyed by (metric, method)."""
    if not column.methods:
        matches = [v for (metric, _), v in sorted(values.items()) if metric == column.metric]
        return matches[0] if matches else None
    for method in column.methods:
        value = values.get((column.metric, ft_method if method == FT else method))
        if value is not None:
            return value
    return None


def _below_baseline(unit: dict[str, Any], column: Column, ft_method: str) -> bool:
    """Whether one of the ``<metric>_vs_<baseline>`` comparisons of the column's score has a CI reaching 0."""
    method = ft_method if FT in column.methods else None
    lows = [low for (metric, m), (low, _) in unit["cis"].items()
            if metric.startswith(f"{column.metric}_vs_") and m == method and low is not None]
    return any(low <= 0 for low in lows)


def summary_rows(con: duckdb.DuckDBPyConnection, ft_method: str = "gd", over: Sequence[str] = (),
                 where: str | None = None) -> list[dict[str, Any]]:
    """One dict per unit, or per group of units that differ only in the ``over`` columns (e.g. ("seed",)):
    the key columns, ``n`` (units), ``true_k`` (a set) and one Cell (or None) per SUMMARY_COLUMNS header."""
    bad = [name for name in over if name not in GROUPABLE]
    if bad:
        why = " (a trained model and its untrained variants are compared, never averaged)" if "variant" in bad else ""
        raise UserError(f"cannot average over {bad}{why}: choose among {', '.join(GROUPABLE)}")
    keys = [key for key in UNIT_KEYS if key not in over and key != "setting" and not (over and key == "unit")]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for unit in _unit_values(con, where).values():
        groups.setdefault(tuple(unit[key] for key in keys), []).append(unit)
    paired = PairedScores(con, where)
    rows = []
    pooled = [(key, setting, units) for key, group in sorted(groups.items(), key=lambda i: tuple(map(str, i[0])))
              for setting, units in split_by_setting(group, over)]
    for key, setting, units in pooled:
        row: dict[str, Any] = dict(zip(keys, key, strict=True)) | {"setting": setting}
        row["n"] = len(units)
        row["true_k"] = set().union(*(unit["true_k"] for unit in units))
        row["no_icl_units"] = sum(not shows_icl({column.header: cell([_pick(unit["values"], column, ft_method)],
                                                                    [_pick(unit["cis"], column, ft_method)])
                                                 for column in ACCURACY_COLUMNS}) for unit in units)
        for column in SUMMARY_COLUMNS:
            row[column.header] = cell([_pick(unit["values"], column, ft_method) for unit in units],
                                      [_pick(unit["cis"], column, ft_method) for unit in units])
            if row[column.header] is not None and FT in column.methods and column.metric in COMPARED:
                row[column.header].below_baseline = (
                    (len(units) == 1 and _below_baseline(units[0], column, ft_method))
                    or paired.below_baseline([unit["unit"] for unit in units], ft_method, column.metric))
        rows.append(row)
    return rows


def _true_k_text(true_k: set) -> str:
    values = sorted(v for v in true_k if v is not None)
    if not values:
        return "—"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def summary_table(con: duckdb.DuckDBPyConnection, ft_method: str = "gd", over: Sequence[str] = (),
                  where: str | None = None) -> Table:
    """Accuracy ZS/ICL/FT, Rec2FTP and its chance level, SimAOU (normalised, raw, random), SimAM before and
    after FT, SimAM_Δ, Kendall and its random baseline: means over layers, per unit or mean ± std over ``over``.
    Key columns that are the same in every row move to the caption; metric columns with no value are left out,
    but Rec2FTP, which shows "—" beside its chance level where FT fixed nothing (as the side-by-side table does)."""
    rows = summary_rows(con, ft_method, over, where)
    if not rows:
        raise UserError(f"no metrics match{f' --where {where!r}' if where else ''}: nothing to report")
    keys = [key for key in UNIT_KEYS if key in rows[0]]
    varying = [key for key in keys if len({str(row[key]) for row in rows}) > 1]
    constant = [f"{key}={rows[0][key]}" for key in keys if key not in varying and rows[0][key] != ""]
    columns = [column for column in SUMMARY_COLUMNS if any(row[column.header] for row in rows)
               or column.metric == "rec2ftp" and any(row["Rec2FTP chance"] for row in rows)]  # "—": FT fixed nothing
    over_text = f"mean ± std (ddof=1) over {', '.join(over)}; " if over else ""
    marked = any(row[c.header] and row[c.header].below_baseline for row in rows for c in columns)
    labels = [key for key in varying if key != "unit"]
    if len({tuple(str(row[key]) for key in labels) for row in rows}) < len(rows):
        labels = varying  # the unit id (a long column) only where nothing else tells rows apart
    varying = [key for key in varying if key in labels]
    no_icl = [(" ".join(str(row[key]) for key in labels) or "every row") + _units_without_icl(row)
              for row in rows if row["no_icl_units"]]
    caption = "\n".join([over_text + ("; ".join(constant) if constant else ""),
                          *_over_hint(rows, over),
                          *([BELOW_BASELINE_NOTE] if marked else []),
                          *([NO_ICL_NOTE.format(", ".join(no_icl))] if no_icl else [])])
    spread = (f"mean ± std over {', '.join(over)}; [95% bootstrap CI over eval examples] where a row is one unit"
              if over else "[95% bootstrap CI over eval examples]")
    table = Table(title=f"iclgd summary (FT = {ft_method}; similarity metrics are means over layers; {spread})",
                  caption=caption)
    for key in varying:
        table.add_column(key, no_wrap=True)
    table.add_column("true k", justify="right")
    if over:
        table.add_column("n", justify="right")
    for column in columns:
        table.add_column(column.header, justify="right")
    for row in rows:
        cells = [str(row[key]) for key in varying] + [_true_k_text(row["true_k"])]
        cells += [str(row["n"])] if over else []
        for column in columns:
            value = row[column.header]
            cells.append(value.text(column.scale, column.digits) if value else "—")
        table.add_row(*cells)
    return table


def _over_hint(rows: list[dict[str, Any]], over: Sequence[str]) -> list[str]:
    """A note when ``over`` left every row one unit because the units also differ in another column (Deutch et al.'s
    runs pair each seed with its own order): name the columns whose addition makes groups."""
    if not over or any(row["n"] > 1 for row in rows):
        return []
    keys = [key for key in UNIT_KEYS if key in rows[0] and key != "unit"]
    helpful = [key for key in keys if key in GROUPABLE and
               len({tuple(str(row[k]) for k in keys if k != key) for row in rows}) < len(rows)]
    if not helpful:
        return []
    return [f"every row is one unit: the units differ in {' or '.join(helpful)} too; "
            f"--over {','.join([*over, helpful[0]])} averages over them"]


def side_by_side_table(con: duckdb.DuckDBPyConnection, by: str = "variant", ft_methods: Sequence[str] = ("gd",),
                       where: str | None = None) -> Table:
    """The summary transposed: one row per metric, one column per value of ``by`` (and per FT method).

    Reads best for one unit (``by="unit"``, its FT methods side by side) and for Deutch et al.'s argument
    (``by="variant"``: the trained model beside its untrained variants)."""
    if by not in (*GROUPABLE, "variant", "unit"):
        raise UserError(f"cannot put {by!r} side by side: choose among {', '.join((*GROUPABLE, 'variant', 'unit'))}")
    groups = {}
    for method in ft_methods:
        for row in summary_rows(con, method, () if by == "unit" else tuple(k for k in GROUPABLE if k != by), where):
            # an untrained variant's column says so (variants are never averaged with the trained model)
            variant = f" {row['variant']}" if by not in ("variant", "unit") and row.get("variant") != "trained" else ""
            value = str(row.get(by, "")) + variant + (f" ({row['setting']})" if row.get("setting") else "")
            groups[(value, method)] = row
    if not groups:
        raise UserError(f"no metrics match{f' --where {where!r}' if where else ''}: nothing to report")
    headers = sorted(groups, key=lambda key: (key[0].split(" (")[0] != "trained", key))  # trained first
    table = Table(title=f"iclgd: means over layers (FT = {', '.join(ft_methods)}); "
                        "[95% bootstrap CI over eval examples]")
    table.add_column("metric", no_wrap=True)
    one_value = len({value for value, _ in headers}) == 1
    for value, method in headers:
        label = method if one_value else value if len(ft_methods) == 1 else f"{value} {method}"
        table.add_column(label, justify="right")
    table.add_row("true k", *[_true_k_text(groups[h]["true_k"]) for h in headers])
    for column in SUMMARY_COLUMNS:
        cells = [groups[h][column.header] for h in headers]
        if any(cells) or column.metric == "rec2ftp":  # Rec2FTP shows "—" when FT fixed nothing
            table.add_row(column.header, *[c.text(column.scale, column.digits) if c else "—" for c in cells])
    notes = []
    if any(c and c.below_baseline for h in headers for c in groups[h].values() if isinstance(c, Cell)):
        notes.append(BELOW_BASELINE_NOTE)
    no_icl = sorted({value + _units_without_icl(groups[(value, method)]) for (value, method) in headers
                     if groups[(value, method)]["no_icl_units"]})
    if no_icl:
        notes.append(NO_ICL_NOTE.format(", ".join(no_icl)))
    table.caption = "\n".join(notes) or None
    return table


def shows_icl(row: dict[str, Any]) -> bool:
    """Whether a summary row shows ICL: its ICL accuracy is above its ZS accuracy and above always predicting the
    most frequent label. For a lone unit the low end of ICL's 95% interval must clear both, so one lucky example
    does not count as ICL; for a mean over units, the mean must. Tables flag each row by its units, each judged
    alone (``no_icl_units``), so a mean over seeds does not hide the seeds without ICL."""
    zs, icl, majority = row.get("acc ZS"), row.get("acc ICL"), row.get("acc majority")
    if zs is None or icl is None:
        return False
    floor = max(zs.mean, majority.mean if majority is not None else 0.0)
    return (icl.ci[0] if icl.ci is not None else icl.mean) > floor


NO_ICL_NOTE = ("no ICL (ICL accuracy, the low end of its 95% CI for one unit, not above both ZS and the majority "
               "label) in: {}; there a similarity of ICL and GD says nothing about how the model learns in context")


def _units_without_icl(row: dict[str, Any]) -> str:
    """How many of a pooled row's units show no ICL on their own, as " (2 of 3 units)"; nothing for a lone unit."""
    return f" ({row['no_icl_units']} of {row['n']} units)" if row["n"] > 1 else ""


def task_key(task: str) -> str:
    """A task name for matching ours to a paper's: file stem, lower case, letters and digits only."""
    if task.endswith((".yaml", ".yml")) or "/" in task:
        task = Path(task).stem
    return re.sub(r"[^a-z0-9]", "", task.lower())


@dataclass
class PaperLine:
    """One printed line: ``source`` is "ours" or "published"; ``values`` task -> number in the paper's unit. Our lines
    also carry ``cells`` (task -> Cell in our unit: mean ± std over the task's units, or a lone unit's interval)."""

    block: int
    row: Row
    model: str
    source: str
    values: dict[str, float]
    avg: float | None
    cells: dict[str, Cell] = field(default_factory=dict)


def line_labels(con: duckdb.DuckDBPyConnection, where: str | None) -> dict[str, str]:
    """unit -> the label of its line in a paper table: the model, with the setting (``model (lr=0.01, shots=4)``)
    where the model's units of one variant differ in k or in another config field beyond what the task, seed, order
    and template decide (:func:`split_by_setting`): two settings are two lines, never one mean.

    k splits first, and the other fields within each k: a field set per (task, k, seed), as an lr searched for each
    trained unit and inherited by its untrained variants, is pooled within its k, not made a line per unit."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for unit in _unit_values(con, where).values():
        groups.setdefault((unit["model"], unit["variant"]), []).append(unit)
    labels = {}
    for (model, _), units in groups.items():
        by_k: dict[int, list[dict[str, Any]]] = {}
        for unit in units:
            by_k.setdefault(unit["k"], []).append(unit)
        for k, same_k in by_k.items():
            for setting, part in split_by_setting(same_k, ("task", "seed", "order", "template")):
                parts = [text for text in (setting, f"shots={k}" if len(by_k) > 1 else "") if text]
                labels.update({unit["unit"]: f"{model} ({', '.join(parts)})" if parts else model for unit in part})
    return labels


def _ours(con: duckdb.DuckDBPyConnection, row: Row, paper: Paper, where: str | None,
          paired: PairedScores, labels: dict[str, str]) -> dict[str, dict[str, Cell]]:
    """line label (:func:`line_labels`) -> {task column -> Cell over its units (seeds, orders, templates)}; our tasks
    not in the paper keep their own name."""
    methods = (row.method, "icl") if row.metric in FT_INDEPENDENT else (row.method,)
    marks = ", ".join("?" for _ in methods)
    _, rows = query(
        con,
        "SELECT unit, model, task, method, value, ci_low, ci_high FROM metrics WHERE layer IS NULL AND metric = ? "
        f"AND variant = ? AND method IN ({marks}) AND isfinite(value) AND {where_clause(where)}",
        [row.metric, row.variant, *methods],
    )
    chosen: dict[str, tuple[int, str, str, float, tuple]] = {}  # unit -> (method rank, model, task, value, ci)
    for unit, model, task, method, value, low, high in rows:
        rank = methods.index(method)
        if unit not in chosen or rank < chosen[unit][0]:
            chosen[unit] = (rank, model, task, value, (low, high))
    by_key = {task_key(task): task for task in paper.tasks}
    values: dict[str, dict[str, list[tuple[str, float, tuple]]]] = {}
    for unit, (_, model, task, value, ci) in chosen.items():
        values.setdefault(labels.get(unit, model), {}).setdefault(by_key.get(task_key(task), task), []).append(
            (unit, value, ci))
    tested = row.metric in COMPARED and row.variant == "trained"
    cells = {}
    for model, tasks in values.items():
        for task, triples in tasks.items():
            cells.setdefault(model, {})[task] = found = cell([v for _, v, _ in triples], [ci for _, _, ci in triples])
            if found is not None and tested:
                found.below_baseline = paired.below_baseline([u for u, _, _ in triples], row.method, row.metric)
    return cells


def paper_lines(con: duckdb.DuckDBPyConnection, paper: str, where: str | None = None) -> list[PaperLine]:
    """For each row of the paper's tables: our line per model (mean over matching units per task; Avg = mean
    over the paper's tasks we have, or over our other tasks if we have none of them), then the published lines."""
    if paper not in PAPERS:
        raise UserError(f"unknown paper {paper!r}: choose one of {', '.join(PAPERS)}")
    spec = PAPERS[paper]
    paired = PairedScores(con, where)  # read once: every row's marks come from it
    labels = line_labels(con, where)
    lines = []
    for block, rows in enumerate(spec.blocks):
        for row in rows:
            for model, cells in sorted(_ours(con, row, spec, where, paired, labels).items()):
                values = {task: row.scale * c.mean for task, c in cells.items()}
                in_paper = [value for task, value in values.items() if task in spec.tasks]
                avg = statistics.fmean(in_paper or values.values())
                lines.append(PaperLine(block, row, model, "ours", values, avg, cells))
            for published in spec.published:
                if published.label == row.published_label:
                    lines.append(PaperLine(block, row, published.model, "published", published.values, published.avg))
    return lines


def paper_table(con: duckdb.DuckDBPyConnection, paper: str = "dai2023", where: str | None = None) -> Table:
    """Rows = the paper's metrics, columns = its tasks (then any other tasks of ours) and Avg; our numbers
    (mean over units: seeds, templates, orders) with the published ones beneath them, labelled and dimmed."""
    spec = PAPERS.get(paper)
    lines = paper_lines(con, paper, where)
    extra = sorted({task for line in lines for task in line.values if task not in spec.tasks})
    spread = ("ours: mean ± std (ddof=1) over a task's units (seeds, orders, templates), or one unit's [95% bootstrap "
              "CI over eval examples]")
    marked = any(c.below_baseline for line in lines for c in line.cells.values())
    table = Table(title=f"{spec.title}: ours vs published", caption="\n".join(filter(None, [
        spread, BELOW_BASELINE_NOTE if marked else None, spec.note])))
    for name in ("metric", "model", "source"):
        table.add_column(name, no_wrap=True)
    for task in (*spec.tasks, *extra):
        table.add_column(task, justify="right")
    table.add_column("Avg", justify="right")
    block = 0
    for line in lines:
        if line.block != block:
            table.add_section()
            block = line.block
        published = line.source == "published"
        digits = spec.published_digits if published and spec.published_digits is not None else line.row.digits
        columns = (*spec.tasks, *extra)
        cells = [line.cells[task].text(line.row.scale, digits) if task in line.cells
                 else f"{line.values[task]:.{digits}f}" if task in line.values else "—" for task in columns]
        avg = "—" if line.avg is None else f"{line.avg:.{line.row.digits}f}"
        table.add_row(line.row.label, line.model, line.source, *cells, avg, style="dim" if published else None)
    return table
