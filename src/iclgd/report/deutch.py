"""Deutch et al. 2024's figures from a results folder (their Table 1 and the untrained baselines are
``paper_table(con, "deutch2024")``):

    Figure 2   α (SimAM_Δ between the LCGD and the GD update) per task, one bar per model variant
    Figure 3   SimAOU and SimAM_Δ per layer, GD and LCGD on one axis, beside the untrained variants
    Figure 4   the per-layer gradient norm at each FT step (a demonstration), GD on a linear colour scale and
               LCGD on a log one (its lower layers learn from their own readout, so its norms span decades)

A bar or curve point is the mean over the matching units (tasks, seeds, orders unless filtered with ``where``);
its error bar or band is ± one sample std (ddof=1) over units, or for a lone unit its stored 95% bootstrap
interval over eval examples. The heatmaps are means over units.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console

from iclgd.checks import check_output_file
from iclgd.report.plots import LABELS, METHOD_LABELS, band, save_plot
from iclgd.report.tables import paper_table, where_clause
from iclgd.runner.results import query

FIG3_METRICS = ("simaou", "simam_delta")
VARIANT_STYLES = {"trained": "-", "untrained:all": "--", "untrained:keep_layernorm": "-.",
                  "untrained:trained_embeddings": ":"}
METHOD_COLOURS = {"gd": "C0", "lcgd": "C1"}
COLOUR_SCALES = {"gd": "linear", "lcgd": "log"}  # Deutch et al.'s Figure 4
STEP_METRIC = re.compile(r"grad_norm_step(\d+)")


def _spread(*stats: float | int | None) -> tuple[float, float]:
    """:func:`~iclgd.report.plots.band` of (mean, std, n, ci_low, ci_high), NaN where there is none (no bar)."""
    return band(*stats) or (float("nan"), float("nan"))


def plot_alpha(con: duckdb.DuckDBPyConnection, out: str | Path, where: str | None = None) -> list[Path]:
    """Figure 2: α per task (mean over units), one bar per variant present."""
    _, rows = query(con, "SELECT task, variant, avg(value), stddev_samp(value), count(*), any_value(ci_low), "
                         "any_value(ci_high) FROM metrics WHERE metric = 'alpha' AND layer IS NULL AND isfinite(value) "
                         f"AND {where_clause(where)} GROUP BY ALL ORDER BY 1, 2")
    tasks = list(dict.fromkeys(row[0] for row in rows))
    variants = sorted({row[1] for row in rows}, key=lambda v: (v != "trained", v))
    bars = {(row[0], row[1]): (row[2], _spread(*row[2:])) for row in rows}
    width = 0.8 / len(variants)
    figure = Figure(figsize=(max(4.0, 0.9 * len(tasks) * len(variants) + 1.5), 3.4))
    axes = figure.add_subplot(1, 1, 1)
    for index, variant in enumerate(variants):
        xs, heights, errors = [], [], [[], []]
        for position, task in enumerate(tasks):
            if (task, variant) not in bars:
                continue
            mean, (low, high) = bars[(task, variant)]
            xs.append(position + (index - (len(variants) - 1) / 2) * width)
            heights.append(mean)
            errors[0].append(mean - low if low == low else 0.0)  # NaN: no error bar
            errors[1].append(high - mean if high == high else 0.0)
        axes.bar(xs, heights, width=width, yerr=errors, capsize=2, label=variant)
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    axes.set_xticks(range(len(tasks)), tasks)
    axes.set_xlabel("task")
    axes.set_ylabel(LABELS["alpha"])
    axes.set_title("$\\alpha$: SimAM$_\\Delta$ between the LCGD and the GD update", fontsize="medium")
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_plot(figure, out)


def plot_layers(con: duckdb.DuckDBPyConnection, out: str | Path, where: str | None = None) -> list[Path]:
    """Figure 3: per-layer SimAOU and SimAM_Δ; colour = FT method (GD, LCGD), line style = model variant."""
    figure = Figure(figsize=(9.0, 3.4))
    for index, metric in enumerate(FIG3_METRICS):
        _, rows = query(con, "SELECT variant, method, layer, avg(value), stddev_samp(value), count(*), "
                             "any_value(ci_low), any_value(ci_high) FROM metrics WHERE metric = ? AND "
                             f"method IN ('gd', 'lcgd') AND layer IS NOT NULL AND isfinite(value) AND "
                             f"{where_clause(where)} GROUP BY ALL ORDER BY 1, 2, 3", [metric])
        curves: dict[tuple[str, str], list[tuple[int, float, tuple[float, float]]]] = {}
        for variant, method, layer, *stats in rows:
            curves.setdefault((variant, method), []).append((layer, stats[0], _spread(*stats)))
        axes = figure.add_subplot(1, len(FIG3_METRICS), index + 1)
        for (variant, method), points in sorted(curves.items(), key=lambda c: (c[0][0] != "trained", c[0])):
            layers = [p[0] for p in points]
            colour = METHOD_COLOURS[method]
            axes.plot(layers, [p[1] for p in points], linestyle=VARIANT_STYLES.get(variant, "--"), color=colour,
                      marker="o" if variant == "trained" else None, markersize=3,
                      label=f"{METHOD_LABELS[method]}, {variant}")
            axes.fill_between(layers, [p[2][0] for p in points], [p[2][1] for p in points], color=colour,
                              alpha=0.15 if variant == "trained" else 0.06, linewidth=0)
        axes.axhline(0.0, color="0.6", linewidth=0.8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("layer")
        axes.set_ylabel(LABELS[metric])
        axes.set_title(f"{LABELS[metric]} (ICL vs FT)", fontsize="medium")
    legend = {label: handle for axes in figure.axes for handle, label in zip(*axes.get_legend_handles_labels(),
                                                                           strict=True)}
    figure.legend(list(legend.values()), list(legend), fontsize="x-small", loc="center left",
                  bbox_to_anchor=(1.0, 0.5))
    return save_plot(figure, out)


def grad_norm_grid(con: duckdb.DuckDBPyConnection, method: str, where: str | None = None) -> np.ndarray:
    """``[layers, steps]`` mean gradient norm over the matching units (NaN where no unit has the step)."""
    _, rows = query(con, "SELECT metric, layer, avg(value) FROM metrics WHERE metric LIKE 'grad_norm_step%' AND "
                         f"method = ? AND layer IS NOT NULL AND {where_clause(where)} GROUP BY ALL", [method])
    cells = [(int(STEP_METRIC.fullmatch(metric)[1]), layer, value) for metric, layer, value in rows
             if STEP_METRIC.fullmatch(metric)]
    if not cells:
        return np.zeros((0, 0))
    grid = np.full((max(c[1] for c in cells) + 1, max(c[0] for c in cells) + 1), np.nan)
    for step, layer, value in cells:
        grid[layer, step] = value
    return grid


def plot_grad_norms(con: duckdb.DuckDBPyConnection, out: str | Path, where: str | None = None) -> list[Path]:
    """Figure 4: one heatmap per FT method with gradient norms; x = FT step (one demonstration), y = layer."""
    grids = {m: grad_norm_grid(con, m, where) for m in ("gd", "lcgd")}
    grids = {m: g for m, g in grids.items() if g.size}
    figure = Figure(figsize=(4.6 * len(grids), 3.6))
    for index, (method, grid) in enumerate(grids.items()):
        axes = figure.add_subplot(1, len(grids), index + 1)
        finite = grid[np.isfinite(grid)]
        if COLOUR_SCALES[method] == "log" and (finite > 0).any():
            norm = LogNorm(vmin=float(finite[finite > 0].min()), vmax=float(finite.max()))
        else:
            norm = Normalize(vmin=float(finite.min()), vmax=float(finite.max()))
        image = axes.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", norm=norm, cmap="viridis",
                            interpolation="nearest")
        figure.colorbar(image, ax=axes, label=f"gradient L2 norm ({COLOUR_SCALES[method]} scale)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("FT step (demonstration)")
        axes.set_ylabel("layer")
        axes.set_title(f"{METHOD_LABELS[method]}: per-layer gradient norm", fontsize="medium")
    return save_plot(figure, out)


def _has(con: duckdb.DuckDBPyConnection, condition: str, where: str | None) -> bool:
    _, rows = query(con, f"SELECT 1 FROM metrics WHERE {condition} AND {where_clause(where)} LIMIT 1")
    return bool(rows)


FIGURES = {  # name -> (draw, the rows it needs, what is missing without them)
    "fig2": (plot_alpha, "metric = 'alpha' AND layer IS NULL", "no α: run units with both gd and lcgd in methods"),
    "fig3": (plot_layers, "metric IN ('simaou', 'simam_delta') AND method IN ('gd', 'lcgd') AND layer IS NOT NULL",
             "no per-layer SimAOU or SimAM_Δ of gd or lcgd"),
    "fig4": (plot_grad_norms, "metric LIKE 'grad_norm_step%' AND method IN ('gd', 'lcgd')",
             "no gradient norms of gd or lcgd"),
}


def figure_stems(con: duckdb.DuckDBPyConnection, stem: str | Path, where: str | None = None) -> dict[str, Path]:
    """The figures the results hold data for -> their file stems (``<stem>_fig2`` ...)."""
    return {name: Path(f"{stem}_{name}") for name, (_, condition, _) in FIGURES.items() if _has(con, condition, where)}


def draw_figures(con: duckdb.DuckDBPyConnection, stems: dict[str, Path],
                 where: str | None = None) -> tuple[list[Path], list[str]]:
    """Draw the figures of ``stems``; returns the written files and a line for each figure not drawn."""
    written, missing = [], []
    for name, (draw, _, reason) in FIGURES.items():
        if name in stems:
            written += draw(con, stems[name], where)
        else:
            missing.append(f"Figure {name[3:]} not drawn: {reason}; see configs/deutch2024/")
    return written, missing


def report_deutch(con: duckdb.DuckDBPyConnection, terminal: Console, stem: str | Path,
                  where: str | None = None) -> list[Path]:
    """Print the Deutch et al. table beside the published numbers and draw Figures 2-4 (``<stem>_fig2`` ...) where the
    results hold their data; say what to run for each figure that cannot be drawn. Returns the written files."""
    stems = figure_stems(con, stem, where)
    for path in stems.values():  # before the table: a figure that cannot be written fails first
        check_output_file(path, flag="--plot-out")
    terminal.print(paper_table(con, "deutch2024", where=where))
    written, missing = draw_figures(con, stems, where)
    for line in missing:
        terminal.print(line)
    return written
