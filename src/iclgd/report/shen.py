"""Shen et al. 2024 from a results folder: Figure 4 (order sensitivity vs epoch), Figure 5 (full-vocabulary
accuracy, TO@10 and OCS@10 vs epoch, one column per learning rate), Table 1 (GD with more data) and a summary of
Sen at the last epoch beside the published values.

A curve point is the mean over the matching units (seeds, k, ...) at one epoch; its band is ± one sample std
(ddof=1) over units, or for a lone unit its stored 95% bootstrap interval over eval examples. ICL, which does not
train, is a horizontal line: its Sen, its full-vocabulary accuracy, or for TO@10 and OCS@10 the ICL-vs-ICL noise
floor (ICL under two orderings of the same demos), averaged over the same units.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from rich.console import Console
from rich.table import Table

from iclgd.checks import check_output_file
from iclgd.errors import UserError
from iclgd.metrics import OUTPUT_METRICS
from iclgd.report.plots import LABELS, save_plot
from iclgd.report.published import SHEN2024_MORE_DATA, SHEN2024_SEN, SHEN2024_TITLE
from iclgd.report.tables import Cell, cell, task_key, where_clause
from iclgd.runner.results import query

FIG5_METRICS = ("fullvocab_accuracy", "to@10", "ocs@10")
SHEN_LABELS = {**LABELS, "order_sensitivity": "order sensitivity Sen", "to@10": "TO@10 (ICL vs FT)",
               "ocs@10": "OCS@10 (ICL vs FT)"}
# The ICL line of a panel: ICL's own value (dashed), or for TO@10 and OCS@10 (stored under "icl") the ICL-vs-ICL
# noise floor (dotted): the legend label and the line style per metric.
ICL_LINE = {"order_sensitivity": ("ICL", "--"), "fullvocab_accuracy": ("ICL", "--"),
            "to@10": ("ICL vs ICL (other order)", ":"), "ocs@10": ("ICL vs ICL (other order)", ":")}
SCALE = {"fullvocab_accuracy": 100.0, "accuracy": 100.0}  # accuracy is stored as a fraction, drawn in %
# Fixed y ranges for bounded metrics, so the learning-rate columns of Figure 5 compare at a glance.
Y_LIMITS = {"fullvocab_accuracy": (-2.0, 102.0), "to@10": (-0.02, 1.02), "ocs@10": (-0.02, 1.02)}
RUN_HINT = ("run `iclgd sweep configs/shen2024/offline-fig4.yaml` (order sensitivity), offline-fig5.yaml (curves "
            "over epochs and learning rates) or offline-table1.yaml (GD with more data) on SmolLM2 here (fig4.yaml, "
            "fig5.yaml and table1.yaml are the paper's LLaMA-7B settings: the hub and a GPU), then `iclgd report <out> "
            "--paper shen2024`")

Panel = tuple[str, str]  # (model, task)


@dataclass(frozen=True)
class UnitInfo:
    """One unit's Shen et al. settings, from its metric rows and its record."""

    model: str
    task: str
    k: int  # ICL's demonstrations (true k)
    ft_demos: int  # N: the demonstrations the FT methods trained on
    ft_shots: int | None  # set: FT trained on more demos than ICL saw (Table 1 only)
    lr: float | None  # the unit's learning rate
    method_lrs: dict[str, float | None]  # FT method -> the learning rate it ran with
    orderings: int
    last_epoch: int | None
    has_sen: bool  # order sensitivity stored (orderings >= 2)
    has_output: bool  # TO@10 / OCS@10 stored (output_metrics)

    @property
    def panel(self) -> Panel:
        return self.model, self.task

    @property
    def on_curves(self) -> bool:
        """Figure 5 material: FT on ICL's own demos, measured against ICL's distribution, or over several epochs
        in a unit that is not an order-sensitivity one (those are Figure 4's)."""
        return self.ft_shots is None and (self.has_output or ((self.last_epoch or 0) > 1 and not self.has_sen))


def shen_units(con: duckdb.DuckDBPyConnection, where: str | None = None) -> dict[str, UnitInfo]:
    """unit -> UnitInfo for the units (matching ``where``) that hold Shen et al. data: order sensitivity, output
    metrics, FT values beyond the first epoch, or FT on ``ft_shots`` demos."""
    _, rows = query(
        con,
        "SELECT unit, any_value(model), any_value(task), max(true_k), max(epoch), "
        "bool_or(metric = 'order_sensitivity'), bool_or(metric IN ('to@10', 'ocs@10')) "
        f"FROM metrics_by_epoch WHERE {where_clause(where)} GROUP BY unit ORDER BY unit",
    )
    records = {unit: json.loads(text) for unit, text in query(con, "SELECT unit, record FROM units")[1]}
    units = {}
    for unit, model, task, true_k, last_epoch, has_sen, has_output in rows:
        record = records.get(unit, {})
        config = record.get("config") or {}
        ft_shots = config.get("ft_shots")
        if not (has_sen or has_output or (last_epoch or 0) > 1 or ft_shots is not None):
            continue
        lr = config["lr"] if config.get("lr") is not None else record.get("lr")
        methods = record.get("methods") or {}
        ft_rows = record.get("ft_demo_rows")  # the demos FT trained on, when not ICL's
        units[unit] = UnitInfo(
            model=model, task=task, k=true_k, ft_demos=len(ft_rows) if ft_rows else true_k, ft_shots=ft_shots, lr=lr,
            method_lrs={name: (spec or {}).get("lr", lr) for name, spec in methods.items()},
            orderings=config.get("orderings", 1), last_epoch=last_epoch, has_sen=bool(has_sen),
            has_output=bool(has_output))
    return units


def _rows(con: duckdb.DuckDBPyConnection, view: str, metrics: Iterable[str], units: Iterable[str],
          where: str | None) -> list[tuple]:
    """(unit, method, metric, epoch, value, ci_low, ci_high) of the layer-null, finite rows of ``view``."""
    metrics, units = list(metrics), list(units)
    if not metrics or not units:
        return []
    _, rows = query(
        con,
        f"SELECT unit, method, metric, epoch, value, ci_low, ci_high FROM {view} WHERE layer IS NULL "
        f"AND metric IN ({', '.join('?' for _ in metrics)}) AND unit IN ({', '.join('?' for _ in units)}) "
        f"AND isfinite(value) AND {where_clause(where)} ORDER BY unit, method, metric, epoch",
        [*metrics, *units],
    )
    return rows


def _ci(low: float | None, high: float | None) -> tuple[float, float] | None:
    return None if low is None or high is None or math.isnan(low) or math.isnan(high) else (low, high)


def _sort_key(key: tuple) -> tuple:
    """A sort key for tuples that may hold None (None last in each position)."""
    return tuple((value is None, 0 if value is None else value) for value in key)


def _cells(groups: dict[Any, list[tuple[float, tuple | None]]]) -> dict[Any, Cell]:
    """key -> Cell over the (value, ci) pairs of each group."""
    return {key: cell([v for v, _ in pairs], [ci for _, ci in pairs]) for key, pairs in groups.items()}


def epoch_curves(con: duckdb.DuckDBPyConnection, metric: str, units: dict[str, UnitInfo],
                 where: str | None = None) -> dict[Panel, dict[tuple[str, float | None], dict[int, Cell]]]:
    """(model, task) -> (FT method, its lr) -> epoch -> Cell over ``units`` of ``metric`` at that epoch."""
    groups: dict[tuple, list] = {}
    for unit, method, _, epoch, value, low, high in _rows(con, "metrics_by_epoch", [metric], units, where):
        if epoch is not None:  # FT values; zs, icl and per-step rows have none
            info = units[unit]
            lr = info.method_lrs.get(method, info.lr)
            groups.setdefault((info.model, info.task, method, lr, epoch), []).append((value, _ci(low, high)))
    curves: dict[Panel, dict[tuple[str, float | None], dict[int, Cell]]] = {}
    for (model, task, method, lr, epoch), value in sorted(_cells(groups).items(), key=lambda i: _sort_key(i[0])):
        curves.setdefault((model, task), {}).setdefault((method, lr), {})[epoch] = value
    return curves


def icl_reference(con: duckdb.DuckDBPyConnection, metric: str, units: dict[str, UnitInfo],
                  where: str | None = None) -> dict[Panel, Cell]:
    """(model, task) -> Cell over ``units`` of ``metric`` stored under ICL (for TO@10, OCS@10, KL, JS: the floor)."""
    groups: dict[Panel, list] = {}
    icl = "icl_vs_icl" if metric in OUTPUT_METRICS else "icl"  # the output metrics' ICL line is their noise floor
    for unit, method, _, _, value, low, high in _rows(con, "metrics", [metric], units, where):
        if method == icl:
            groups.setdefault(units[unit].panel, []).append((value, _ci(low, high)))
    return _cells(groups)


def _text(value: Cell | None, scale: float = 1.0, digits: int = 3) -> str:
    return value.text(scale, digits) if value else "—"


def _set_text(values: Iterable[Any]) -> str:
    present = sorted({v for v in values if v is not None})
    if not present:
        return "—"
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in present)


def _model_name(model: str) -> str:
    return Path(model).name or model


# ---- tables -------------------------------------------------------------------------------------------------


def sen_rows(con: duckdb.DuckDBPyConnection, units: dict[str, UnitInfo], where: str | None = None
             ) -> list[dict[str, Any]]:
    """One row per (model, task, FT method, its lr, k, orderings): the method's Sen at its last epoch and ICL's Sen,
    each a Cell over the same units (mean ± std, or a lone unit's bootstrap interval)."""
    with_sen = {unit: info for unit, info in units.items() if info.has_sen}
    rows = _rows(con, "metrics", ["order_sensitivity"], with_sen, where)
    icl = {unit: (value, _ci(low, high)) for unit, method, _, _, value, low, high in rows if method == "icl"}
    groups: dict[tuple, list] = {}
    for unit, method, _, epoch, value, low, high in rows:
        if method != "icl":
            info = with_sen[unit]
            key = (info.model, info.task, method, info.method_lrs.get(method, info.lr), info.k, info.orderings)
            groups.setdefault(key, []).append((unit, epoch, (value, _ci(low, high))))
    out = []
    for key, members in sorted(groups.items(), key=lambda item: _sort_key(item[0])):
        model, task, method, lr, k, orderings = key
        icl_pairs = [icl[unit] for unit, _, _ in members if unit in icl]
        out.append(dict(model=model, task=task, method=method, lr=lr, k=k, orderings=orderings, n=len(members),
                        epochs={epoch for _, epoch, _ in members},
                        sen=cell([p[0] for _, _, p in members], [p[1] for _, _, p in members]),
                        icl=cell([v for v, _ in icl_pairs], [ci for _, ci in icl_pairs])))
    return out


def sen_table(rows: list[dict[str, Any]]) -> Table:
    """Sen per FT method at its last epoch beside ICL's (ours), then Shen et al.'s approximate values (dimmed)."""
    several_models = len({row["model"] for row in rows}) > 1
    table = Table(title="Shen et al. 2024, Figure 4: order sensitivity Sen at the last epoch, FT vs ICL "
                        "(mean ± std over units; [95% bootstrap CI] for one unit)",
                  caption="Sen = mean over eval examples of Σ_v std over orderings of p(v | x). Full-batch GD is "
                          "order-invariant: its Sen is exactly 0 (a step sums its demos in one canonical order).\n"
                          "Published values are approximate "
                          "(read off a figure, from secondary summaries of the paper).")
    for name in ("source", *(["model"] if several_models else []), "task", "method", "lr", "k", "orderings",
                 "epoch", "units"):
        table.add_column(name, no_wrap=True)
    table.add_column("Sen FT", justify="right")
    table.add_column("Sen ICL", justify="right")
    for row in rows:
        table.add_row("ours", *([_model_name(row["model"])] if several_models else []), row["task"], row["method"],
                      _set_text([row["lr"]]), str(row["k"]), str(row["orderings"]), _set_text(row["epochs"]),
                      str(row["n"]), _text(row["sen"], digits=4), _text(row["icl"], digits=4))
    table.add_section()
    ft, icl = SHEN2024_SEN
    table.add_row("published (≈)", *([ft.model] if several_models else []), ft.task, ft.label, "—", str(ft.k),
                  str(ft.orderings), "every", "—", f"{ft.low:.2f}–{ft.high:.2f}", f"{icl.low:.2f}–{icl.high:.2f}",
                  style="dim")
    return table


def more_data_rows(con: duckdb.DuckDBPyConnection, units: dict[str, UnitInfo], where: str | None = None
                   ) -> list[dict[str, Any]]:
    """Table 1: one row per (model, task, N = FT demos, unit lr): label-word accuracy of each FT method at its last
    epoch and of k-shot ICL, each a Cell over the units; ``k``, ``epochs`` and ``lrs`` (the lrs the FT methods
    trained at: the unit's, or a method's own as in whole-gd-label@1e-3) are the sets seen."""
    groups: dict[tuple, dict[str, list]] = {}
    seen: dict[tuple, dict[str, set]] = {}
    units = {u: info for u, info in units.items() if info.ft_shots is not None} or units  # Table 1's own units
    for unit, method, _, epoch, value, low, high in _rows(con, "metrics", ["accuracy"], units, where):
        if method in ("zs", "majority") or "_vs_" in method:
            continue
        info = units[unit]
        key = (info.model, info.task, info.ft_demos, info.lr)
        groups.setdefault(key, {}).setdefault(method, []).append((value, _ci(low, high)))
        facts = seen.setdefault(key, {"k": set(), "epochs": set(), "units": set(), "lrs": set()})
        facts["k"].add(info.k)
        if method != "icl":  # a method named with its own lr (whole-gd-label@1e-3) trains at that one
            facts["lrs"].add(info.method_lrs.get(method, info.lr))
        facts["units"].add(unit)
        if epoch is not None:
            facts["epochs"].add(epoch)
    out = []
    for key in sorted(groups, key=_sort_key):
        model, task, n, lr = key
        lrs = {value for value in seen[key]["lrs"] if value is not None} or {lr}
        out.append(dict(model=model, task=task, N=n, lr=lr, lrs=lrs, k=seen[key]["k"], epochs=seen[key]["epochs"],
                        n=len(seen[key]["units"]), accuracy=_cells(groups[key])))
    return out


def more_data_table(rows: list[dict[str, Any]]) -> Table:
    """Rows = FT demos N per task; columns = each FT method's accuracy (%) at its last epoch, then k-shot ICL's."""
    methods = sorted({m for row in rows for m in row["accuracy"] if m != "icl"})
    several_models = len({row["model"] for row in rows}) > 1
    table = Table(title="Shen et al. 2024, Table 1: GD with more data: label-word accuracy (%) of FT on N demos at "
                        "the last epoch vs k-shot ICL (mean ± std over units; [95% bootstrap CI] for one unit)",
                  caption=f"Published: {SHEN2024_MORE_DATA}.")
    for name in (*(["model"] if several_models else []), "task", "N (FT demos)", "lr", "epochs", "units"):
        table.add_column(name, no_wrap=True, justify="right" if name.startswith("N") else "left")
    for method in methods:
        table.add_column(f"FT {method}", justify="right")
    table.add_column("ICL k", justify="right")
    table.add_column("ICL", justify="right")
    task = None
    for row in rows:
        if task is not None and (row["model"], row["task"]) != task:
            table.add_section()
        task = row["model"], row["task"]
        table.add_row(*([_model_name(row["model"])] if several_models else []), row["task"], str(row["N"]),
                      _set_text(row["lrs"]), _set_text(row["epochs"]), str(row["n"]),
                      *(_text(row["accuracy"].get(m), 100, 1) for m in methods), _set_text(row["k"]),
                      _text(row["accuracy"].get("icl"), 100, 1))
    return table


# ---- figures ------------------------------------------------------------------------------------------------


def _band(value: Cell) -> tuple[float, float] | None:
    if value.std is not None:
        return value.mean - value.std, value.mean + value.std
    return value.ci


def _draw_curve(axes, points: dict[int, Cell], color: str, scale: float) -> None:
    epochs = list(points)
    axes.plot(epochs, [points[e].mean * scale for e in epochs], marker="o", markersize=3, color=color)
    bands = [_band(points[e]) for e in epochs]
    if all(band is not None for band in bands):
        axes.fill_between(epochs, [b[0] * scale for b in bands], [b[1] * scale for b in bands], color=color,
                          alpha=0.15, linewidth=0)


def _draw_icl(axes, value: Cell | None, metric: str, scale: float) -> None:
    if value is None:
        return
    axes.axhline(value.mean * scale, color="black", linestyle=ICL_LINE[metric][1], linewidth=1.0)
    band = _band(value)
    if band is not None:
        axes.axhspan(band[0] * scale, band[1] * scale, color="black", alpha=0.08, linewidth=0)


def _epoch_axis(axes, epochs: Iterable[int]) -> None:
    ticks = sorted(set(epochs))
    axes.set_xscale("log")
    axes.set_xticks(ticks, [str(e) for e in ticks])
    axes.minorticks_off()
    axes.set_xlabel("epoch")


def _panel_title(panel: Panel, several_models: bool) -> str:
    return f"{_model_name(panel[0])}: {panel[1]}" if several_models else panel[1]


def _legend(figure: Figure, labels: dict[str, str], icl_metrics: Iterable[str]) -> None:
    handles = [Line2D([], [], color=color, marker="o", markersize=3) for color in labels.values()]
    names = list(labels)
    for label, style in dict.fromkeys(ICL_LINE[metric] for metric in icl_metrics):
        handles.append(Line2D([], [], color="black", linestyle=style))
        names.append(label)
    figure.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")


def plot_order_sensitivity(con: duckdb.DuckDBPyConnection, units: dict[str, UnitInfo], stem: str | Path,
                           where: str | None = None) -> list[Path]:
    """Figure 4: Sen vs epoch (log x), one panel per (model, task), one line per FT method (and lr, if several),
    ICL's Sen as a dashed horizontal line; writes ``stem``.png and .pdf."""
    with_sen = {unit: info for unit, info in units.items() if info.has_sen}
    curves = epoch_curves(con, "order_sensitivity", with_sen, where)
    icl = icl_reference(con, "order_sensitivity", with_sen, where)
    panels = sorted(curves)
    several_models = len({model for model, _ in panels}) > 1
    lines_seen = {line for lines in curves.values() for line in lines}
    several_lrs = {m for m, _ in lines_seen if len({lr for method, lr in lines_seen if method == m}) > 1}
    labels: dict[str, str] = {}  # line label -> colour, shared by the panels
    ncols = min(3, len(panels))
    figure = Figure(figsize=(4.4 * ncols, 3.3 * math.ceil(len(panels) / ncols)))
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(math.ceil(len(panels) / ncols), ncols, index + 1)
        lines = curves[panel]
        for (method, lr), points in lines.items():
            label = f"{method} (lr {lr:g})" if method in several_lrs and lr is not None else method
            color = labels.setdefault(label, f"C{len(labels) % 10}")
            _draw_curve(axes, points, color, 1.0)
        _draw_icl(axes, icl.get(panel), "order_sensitivity", 1.0)
        _epoch_axis(axes, [e for points in lines.values() for e in points])
        axes.set_ylabel(SHEN_LABELS["order_sensitivity"])
        top = max(axes.get_ylim()[1], 1e-3)  # Sen >= 0; an all-zero panel (one demo, full-batch GD) keeps a scale
        axes.set_ylim(-0.03 * top, top)
        k = sorted({info.k for info in with_sen.values() if info.panel == panel})
        orderings = sorted({info.orderings for info in with_sen.values() if info.panel == panel})
        axes.set_title(f"{_panel_title(panel, several_models)} (k = {_set_text(k)}, "
                       f"{_set_text(orderings)} orderings)", fontsize="medium")
    _legend(figure, labels, ["order_sensitivity"] if icl else [])
    return save_plot(figure, Path(stem))


def plot_curves_by_lr(con: duckdb.DuckDBPyConnection, units: dict[str, UnitInfo], stem: str | Path,
                      panel: Panel, k: int, where: str | None = None) -> list[Path]:
    """Figure 5 for one (model, task, k): rows = full-vocabulary accuracy, TO@10, OCS@10; columns = learning rate;
    one line per FT method over epochs (log x); ICL's accuracy (dashed) and the ICL-vs-ICL floor (dotted)."""
    chosen = {unit: info for unit, info in units.items() if info.on_curves and info.panel == panel and info.k == k}
    curves = {metric: epoch_curves(con, metric, chosen, where).get(panel, {}) for metric in FIG5_METRICS}
    lrs = sorted({lr for lines in curves.values() for _, lr in lines}, key=lambda lr: _sort_key((lr,)))
    methods = sorted({method for lines in curves.values() for method, _ in lines})
    colors = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    figure = Figure(figsize=(3.6 * len(lrs), 2.9 * len(FIG5_METRICS)))
    for column, lr in enumerate(lrs):
        # ICL does not train: its line in this column averages the units that ran a method at this lr
        at_lr = {u: info for u, info in chosen.items() if lr in info.method_lrs.values()}
        for row, metric in enumerate(FIG5_METRICS):
            axes = figure.add_subplot(len(FIG5_METRICS), len(lrs), row * len(lrs) + column + 1)
            scale = SCALE.get(metric, 1.0)
            lines = {method: points for (method, line_lr), points in curves[metric].items() if line_lr == lr}
            for method, points in lines.items():
                _draw_curve(axes, points, colors[method], scale)
            _draw_icl(axes, icl_reference(con, metric, at_lr, where).get(panel), metric, scale)
            if lines:
                _epoch_axis(axes, [e for points in lines.values() for e in points])
            else:
                axes.text(0.5, 0.5, "not stored\n(output_metrics: false)", ha="center", va="center",
                          transform=axes.transAxes, fontsize="small", color="0.4")
            if row == 0:
                axes.set_title(f"lr = {'—' if lr is None else f'{lr:g}'}", fontsize="medium")
            axes.set_ylim(*Y_LIMITS[metric])
            if column == 0:
                axes.set_ylabel(SHEN_LABELS.get(metric, metric))
    figure.suptitle(f"{_panel_title(panel, len({i.model for i in units.values()}) > 1)}: FT vs ICL over epochs "
                    f"(mean over units, k = {k})", fontsize="medium")
    _legend(figure, {method: colors[method] for method in methods}, FIG5_METRICS)
    return save_plot(figure, Path(stem))


# ---- the report ---------------------------------------------------------------------------------------------


def shen_tables(con: duckdb.DuckDBPyConnection, units: dict[str, UnitInfo], where: str | None = None) -> list[Table]:
    """The Sen summary (units with order sensitivity) and Table 1 (units with ft_shots), where the results hold them."""
    tables = []
    if any(info.has_sen for info in units.values()):
        tables.append(sen_table(sen_rows(con, units, where)))
    if any(info.ft_shots is not None for info in units.values()):
        tables.append(more_data_table(more_data_rows(con, units, where)))
    return tables


def report_shen(con: duckdb.DuckDBPyConnection, terminal: Console, stem: str | Path, where: str | None = None,
                source: str | Path = "the results folder") -> list[Path]:
    """Print the Sen summary and Table 1, draw Figures 4 and 5 (``<stem>_fig4``, ``<stem>_fig5[_<task>]``); return the
    written files. Without any Shen et al. data: a UserError saying what to run, before anything is written."""
    units = shen_units(con, where)
    if not units:
        raise UserError(f"no Shen et al. results in {source}{f' matching --where {where!r}' if where else ''}: no unit "
                        f"ran more than one epoch, several orderings, output metrics or ft_shots; {RUN_HINT}")
    stem = Path(stem)
    fig4 = Path(f"{stem}_fig4") if any(info.has_sen for info in units.values()) else None
    panels = sorted({(*info.panel, info.k) for info in units.values() if info.on_curves})  # (model, task, k)
    several_models = len({model for model, _, _ in panels}) > 1
    several_k = len({k for _, _, k in panels}) > 1
    fig5 = {panel: Path(f"{stem}_fig5" if len(panels) == 1 else
                        f"{stem}_fig5_{task_key(_model_name(panel[0])) + '_' if several_models else ''}"
                        f"{task_key(panel[1])}{f'_k{panel[2]}' if several_k else ''}") for panel in panels}
    for path in [fig4, *fig5.values()]:  # before the tables: a figure that cannot be written fails first
        if path is not None:
            check_output_file(path, flag="--plot-out")
    terminal.print(f"[bold]{SHEN2024_TITLE}: ours vs published[/bold]")
    for table in shen_tables(con, units, where):
        terminal.print(table)
    if not any(info.ft_shots is not None for info in units.values()):
        terminal.print("Table 1 not printed: no unit trained FT on more demos than ICL (ft_shots); run "
                       "`iclgd sweep configs/shen2024/offline-table1.yaml` (table1.yaml: the paper's LLaMA-7B setting)")
    paths = []
    if fig4 is not None:
        paths += plot_order_sensitivity(con, units, fig4, where)
    else:
        terminal.print("Figure 4 not drawn: no order sensitivity stored (units with orderings >= 2); run "
                       "`iclgd sweep configs/shen2024/offline-fig4.yaml` (fig4.yaml: the paper's LLaMA-7B setting)")
    for (model, task, k), path in fig5.items():
        paths += plot_curves_by_lr(con, units, path, (model, task), k, where)
    if not fig5:
        terminal.print("Figure 5 not drawn: no FT curves on ICL's own demos (epochs > 1 or output_metrics); run "
                       "`iclgd sweep configs/shen2024/offline-fig5.yaml` (fig5.yaml: the paper's LLaMA-7B setting)")
    return paths
