"""Paper-ready figures from a results folder (matplotlib, Agg canvas, no pyplot state): PNG and PDF.

Each curve or bar is the mean over the matching units (seeds, templates, orders, tasks unless filtered
with ``where``); the band or error bar is ± one sample std (ddof=1) where there are two or more units.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import duckdb
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from iclgd.errors import UserError
from iclgd.report.tables import where_clause
from iclgd.runner.results import query
from iclgd.runs import save_figure

LABELS = {
    "accuracy": "accuracy (%)",
    "fullvocab_accuracy": "full-vocabulary accuracy (%)",
    "simaou": "SimAOU",
    "simaou_norm": "SimAOU (normalised)",
    "simaou_random": "SimAOU, uniform random vector",
    "simaou_norm_random": "SimAOU (normalised), uniform random vector",
    "simaou_random_direction": "SimAOU, random weight direction",
    "simaou_norm_random_direction": "SimAOU (normalised), random weight direction",
    "simam": "SimAM (after FT)",
    "simam_before": "SimAM (before FT)",
    "simam_delta": "SimAM$_\\Delta$",
    "kendall": "Kendall $\\tau$",
    "kendall_random": "Kendall $\\tau$, random",
    "alpha": "$\\alpha$ (LCGD vs GD)",
    "rec2ftp": "Rec2FTP (%)",
}
METHOD_LABELS = {"zs": "ZS", "icl": "ICL", "gd": "GD", "lcgd": "LCGD"}
BAR_LABELS = {"zs": "ZS", "icl": "ICL", "gd": "FT (GD)", "lcgd": "FT (LCGD)"}
GROUP_COLUMNS = ("model", "variant", "task", "template", "k", "seed", "order", "method", "unit")


def save_plot(figure: Figure, out: str | Path) -> list[Path]:
    """Write ``out`` as .png (200 dpi) and .pdf; return both paths."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    return save_figure(figure, out)


def band(mean: float, std: float | None, n: int, ci_low: float | None,
         ci_high: float | None) -> tuple[float, float] | None:
    """The band drawn around a mean over ``n`` units: ± one sample std, or for a lone unit its stored 95% interval;
    None where neither is known."""
    if std is not None and n > 1:
        return mean - std, mean + std
    if n == 1 and ci_low is not None and ci_high is not None:
        return ci_low, ci_high
    return None


def _method_for(con: duckdb.DuckDBPyConnection, metric: str, method: str, where: str | None) -> str:
    """``method`` if the metric has per-layer rows under it, else 'icl' (FT-independent metrics), else the one method
    that has them (α: 'lcgd_vs_gd'), else error."""
    for candidate in (method, "icl"):
        _, rows = query(con, f"SELECT 1 FROM metrics WHERE metric = ? AND method = ? AND layer IS NOT NULL AND "
                             f"{where_clause(where)} LIMIT 1", [metric, candidate])
        if rows:
            return candidate
    _, rows = query(con, f"SELECT DISTINCT method FROM metrics WHERE metric = ? AND layer IS NOT NULL AND "
                         f"{where_clause(where)}", [metric])
    if len(rows) == 1:
        return rows[0][0]
    raise UserError(f"no per-layer values of metric {metric!r} for method {method!r}: see "
                    "`iclgd sql <out> \"SELECT DISTINCT metric, method FROM metrics\"`")


# What a unit measures under; seeds and orders are replicates, which a plot's mean ± std is over.
CONDITIONS = ("model", "variant", "task", "template", "k")


def group_label(con: duckdb.DuckDBPyConnection, by: str, rows_sql: str, params: Sequence) -> tuple[str, list[str]]:
    """SQL for a plot group's label: the ``by`` column, then every other condition column that varies among the rows
    ``rows_sql`` (a WHERE clause) selects, so a bar or curve never pools units measured under different conditions
    (a trained and an untrained model, two tasks) into one mean; and those other columns."""
    counts = ", ".join(f'count(DISTINCT "{column}")' for column in CONDITIONS)
    _, rows = query(con, f"SELECT {counts} FROM metrics WHERE {rows_sql}", list(params))
    extra = [column for column, n in zip(CONDITIONS, rows[0], strict=True) if n > 1 and column != by]
    return "concat_ws(' ', " + ", ".join(f'CAST("{column}" AS VARCHAR)' for column in (by, *extra)) + ")", extra


def plot_per_layer(con: duckdb.DuckDBPyConnection, metrics: Sequence[str], out: str | Path, by: str = "variant",
                   method: str = "gd", where: str | None = None) -> list[Path]:
    """One panel per metric: value against layer, one curve per value of column ``by`` (and of every other condition
    column that varies: :func:`group_label`); the band is ± std over units, or for a curve of one unit its 95%
    bootstrap interval over eval examples."""
    if by not in GROUP_COLUMNS:
        raise UserError(f"cannot draw one curve per {by!r}: choose among {', '.join(GROUP_COLUMNS)}")
    if not metrics:
        raise UserError("no metrics to plot: pass e.g. --metrics simaou,simam_delta")
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    figure = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
    panels, titles = [], [by]  # the legend's title names the label's parts in the label's order
    for metric in metrics:
        chosen = _method_for(con, metric, method, where)
        rows_sql = f"metric = ? AND method = ? AND layer IS NOT NULL AND isfinite(value) AND {where_clause(where)}"
        label, extra = group_label(con, by, rows_sql, [metric, chosen])
        titles += [column for column in extra if column not in titles]
        titles[1:] = sorted(titles[1:], key=CONDITIONS.index)  # each label's parts: by, then CONDITIONS' order
        _, rows = query(
            con,
            f"SELECT {label}, layer, avg(value), stddev_samp(value), count(*), any_value(ci_low), any_value(ci_high) "
            f"FROM metrics WHERE {rows_sql} GROUP BY ALL ORDER BY 1, 2",
            [metric, chosen],
        )
        curves: dict[str, list[tuple[int, float, tuple[float, float] | None]]] = {}  # layer, mean, band
        for group, layer, *stats in rows:
            curves.setdefault(group, []).append((layer, stats[0], band(*stats)))
        panels.append((metric, chosen, curves))
    groups = sorted({group for _, _, curves in panels for group in curves})
    colors = {group: f"C{index % 10}" for index, group in enumerate(groups)}  # one colour per group, all panels
    for index, (metric, chosen, curves) in enumerate(panels):
        axes = figure.add_subplot(nrows, ncols, index + 1)
        for group, points in curves.items():
            layers = [p[0] for p in points]
            axes.plot(layers, [p[1] for p in points], marker="o", markersize=3, color=colors[group], label=group)
            if all(p[2] is not None for p in points):
                axes.fill_between(layers, [p[2][0] for p in points], [p[2][1] for p in points], color=colors[group],
                                  alpha=0.15, linewidth=0)
        axes.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("layer")
        axes.set_ylabel(LABELS.get(metric, metric))
        versus = "" if chosen == "icl" else f" (ICL vs {METHOD_LABELS.get(chosen, chosen)})"
        axes.set_title(LABELS.get(metric, metric) + versus, fontsize="medium")
    handles = [Line2D([], [], color=colors[group], marker="o", markersize=3) for group in groups]
    figure.legend(handles, groups, title=", ".join(titles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                  fontsize="small")
    return save_plot(figure, out)


def accuracy_bars(con: duckdb.DuckDBPyConnection, by: str, methods: Sequence[str], metric: str = "accuracy",
                  where: str | None = None) -> tuple[list[str], dict[tuple[str, str], tuple[float, float]], list[str]]:
    """The bars' data: group labels (in order), (group, method) -> (mean, low, high) in %, the error bar being
    :func:`band`'s (± one std over units, or a lone unit's 95% interval; NaN where neither is known), and the
    condition columns besides ``by`` in the labels."""
    if by not in GROUP_COLUMNS:
        raise UserError(f"cannot group bars by {by!r}: choose among {', '.join(GROUP_COLUMNS)}")
    marks = ", ".join("?" for _ in methods)
    rows_sql = f"metric = ? AND method IN ({marks}) AND layer IS NULL AND isfinite(value) AND {where_clause(where)}"
    label, extra = group_label(con, by, rows_sql, [metric, *methods])
    _, rows = query(con, f"SELECT {label}, method, avg(value), stddev_samp(value), count(*), min(ci_low), "
                         f"min(ci_high) FROM metrics WHERE {rows_sql} GROUP BY ALL ORDER BY 1", [metric, *methods])
    if not rows:
        raise UserError(f"no {metric!r} values for methods {list(methods)}: nothing to plot")
    groups = list(dict.fromkeys(row[0] for row in rows))
    values = {}
    for group, method, mean, std, n, ci_low, ci_high in rows:
        low, high = band(mean, std, n, ci_low, ci_high) or (math.nan, math.nan)
        values[(group, method)] = (100 * mean, 100 * low, 100 * high)
    return groups, values, extra


def plot_accuracy_bars(con: duckdb.DuckDBPyConnection, out: str | Path, by: str = "task",
                       methods: Sequence[str] = ("zs", "icl", "gd"), metric: str = "accuracy",
                       where: str | None = None) -> list[Path]:
    """Grouped bars: one group per value of ``by`` (and of every other condition column that varies:
    :func:`group_label`), one bar per method (ZS, ICL, FT), the mean over units with ± one std, or a lone unit's
    value with its 95% bootstrap interval."""
    groups, values, extra = accuracy_bars(con, by, methods, metric, where)
    width = 0.8 / len(methods)
    figure = Figure(figsize=(max(4.0, 1.1 * len(groups) * len(methods) * 0.6 + 1.5), 3.4))
    axes = figure.add_subplot(1, 1, 1)
    for index, method in enumerate(methods):
        xs = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        mean, low, high = zip(*(values.get((group, method), (math.nan,) * 3) for group in groups), strict=True)
        errors = [[m - lo for m, lo in zip(mean, low, strict=True)],
                  [hi - m for m, hi in zip(mean, high, strict=True)]]  # NaN: no error bar
        axes.bar(xs, mean, width=width, yerr=errors, capsize=2, label=BAR_LABELS.get(method, method))
    # long labels ("untrained:trained_embeddings") wrap rather than run into their neighbours
    labels = [textwrap.fill(group.replace(":", ": "), 16, break_long_words=False) for group in groups]
    axes.set_xticks(range(len(groups)), labels)
    axes.set_xlabel(", ".join([by, *extra]))
    axes.set_ylabel(LABELS.get(metric, metric))
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_plot(figure, out)
