"""Accuracy and every ICL-vs-GD score against pretraining step (`iclgd emergence`), beside the untrained baselines.

Reads an emergence results folder (one unit per checkpoint and variant; the step is the number that ends the model
folder's name, ``step-002000``). Every value is the unit's layer-null score with its 95% bootstrap interval over
eval examples; the untrained variants of each checkpoint are drawn dashed, and a score's within-unit floor (Dai's
random baseline, the ICL-vs-ICL noise floor) dotted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from iclgd.errors import UserError
from iclgd.experiments.weights import step_number
from iclgd.runner.results import query
from iclgd.runs import save_figure


@dataclass(frozen=True)
class Series:
    """One panel: ``metric`` under ``method`` (and its within-unit ``floor`` as (method, metric), if any)."""

    title: str
    metric: str
    method: str
    floor: tuple[str, str] | None = None
    scale: float = 1.0


ACCURACY = (Series("ICL", "accuracy", "icl", scale=100), Series("ZS", "accuracy", "zs", scale=100),
            Series("GD", "accuracy", "gd", scale=100))
SCORES = (
    Series("SimAOU_norm (Dai)", "simaou_norm", "gd", ("icl", "simaou_norm_random")),
    Series("SimAOU (Deutch)", "simaou", "gd", ("icl", "simaou_random")),
    Series("SimAM_Δ (Deutch)", "simam_delta", "gd"),
    Series("Kendall τ (Dai)", "kendall", "gd", ("gd", "kendall_random")),
    Series("α, LCGD vs GD (Deutch)", "alpha", "lcgd_vs_gd"),
    Series("TO@10 (Shen)", "to@10", "gd", ("icl_vs_icl", "to@10")),
    Series("OCS@10 (Shen)", "ocs@10", "gd", ("icl_vs_icl", "ocs@10")),
)


def emergence_values(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], dict[int, tuple]]:
    """(variant, method, metric) -> {step: (value, ci_low, ci_high)} from the layer-null rows."""
    _, rows = query(con, "SELECT model, variant, method, metric, value, ci_low, ci_high FROM metrics "
                         "WHERE layer IS NULL")
    values: dict[tuple[str, str, str], dict[int, tuple]] = {}
    for model, variant, method, metric, value, low, high in rows:
        series = values.setdefault((variant, method, metric), {})
        step = step_number(model)
        if step in series:
            raise UserError(f"two units of step {step} ({variant}, {metric}): an emergence folder holds one task, k "
                            "and seed per checkpoint; give each setting its own --out")
        series[step] = (value, low, high)
    if not values:
        raise UserError("no metrics in this folder: run iclgd emergence first")
    return values


def emergence_table(values: dict[tuple[str, str, str], dict[int, tuple]]) -> Table:
    """One row per checkpoint: the trained model's accuracies and scores, each untrained variant's in parentheses."""
    variants = sorted({variant for variant, _, _ in values if variant != "trained"})
    steps = sorted({step for series in values.values() for step in series})
    table = Table(title="ICL vs GD across pretraining: trained (untrained: " + ", ".join(
        v.removeprefix("untrained:") for v in variants) + ")", caption="accuracy in %; scores are means over layers")
    table.add_column("step", justify="right")
    shown = [s for s in (*ACCURACY, *SCORES) if ("trained", s.method, s.metric) in values]
    for series in shown:
        table.add_column(series.title.split(" (")[0] + (" acc" if series.metric == "accuracy" else ""),
                         justify="right")
    for step in steps:
        cells = []
        for series in shown:
            digits = 1 if series.metric == "accuracy" else 3
            trained = values[("trained", series.method, series.metric)].get(step)
            text = "—" if trained is None else f"{trained[0] * series.scale:.{digits}f}"
            others = [values.get((v, series.method, series.metric), {}).get(step) for v in variants]
            if any(o is not None for o in others) and series.method != "zs":
                text += " (" + ", ".join("—" if o is None else f"{o[0] * series.scale:.{digits}f}"
                                         for o in others) + ")"
            cells.append(text)
        table.add_row(str(step), *cells)
    return table


CIRCUIT_TITLES = {"previous_token_score": "previous-token head", "label_attention": "query → all labels",
                  "induction_score": "query → its input's labels",
                  "induction_share": "query → its input's share of the labels"}


def plot_emergence(values: dict[tuple[str, str, str], dict[int, tuple]], stem: str | Path,
                   onset: int | None = None, circuit: dict[str, dict[int, float]] | None = None) -> list[Path]:
    """Accuracy and one panel per score against pretraining step; trained solid with its 95% interval, untrained
    dashed, within-unit floors dotted; ``onset`` (the step ICL switched on) as a vertical line; ``circuit`` (the
    run's logged progress measures of the induction circuit, measure -> {step: value}) as one more panel."""
    scores = [s for s in SCORES if ("trained", s.method, s.metric) in values]
    panels = 1 + len(scores) + bool(circuit)
    columns = min(4, panels)
    rows = -(-panels // columns)
    figure = Figure(figsize=(3.4 * columns, 2.8 * rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    variants = sorted({variant for variant, _, _ in values if variant != "trained"})
    _panel(axes[0], values, ACCURACY, variants, "accuracy (%)", onset)
    for axis, series in zip(axes[1:], scores, strict=False):
        _panel(axis, values, (series,), variants, series.title, onset)
    if circuit:
        axis = axes[panels - 1]
        for name, logged in circuit.items():
            # markers: a run shorter than its log_every logs the circuit once, and a one-point line draws nothing
            axis.plot(sorted(logged), [logged[step] for step in sorted(logged)], marker=".",
                      label=CIRCUIT_TITLES.get(name, name))
        if onset is not None:
            axis.axvline(onset, color="black", linewidth=0.8, alpha=0.5)
        axis.set(title="induction circuit (pretraining log)", xlabel="pretraining step", ylabel="attention share",
                 ylim=(-0.02, 1.02))
        axis.legend(frameon=False, fontsize=7)
    for axis in axes[panels:]:
        axis.set_visible(False)
    figure.tight_layout()
    return save_figure(figure, stem)


def _panel(axis, values, series_list: Sequence[Series], variants: list[str], title: str, onset: int | None) -> None:
    for series in series_list:
        trained = values.get(("trained", series.method, series.metric), {})
        steps = sorted(trained)
        label = series.title if series.metric == "accuracy" else "trained"
        line = axis.plot(steps, [trained[s][0] * series.scale for s in steps], marker=".", label=label)[0]
        if all(trained[s][1] is not None for s in steps):
            axis.fill_between(steps, [trained[s][1] * series.scale for s in steps],
                              [trained[s][2] * series.scale for s in steps], color=line.get_color(), alpha=0.2,
                              linewidth=0)
        if series.method == "zs":
            continue
        for variant in variants:
            other = values.get((variant, series.method, series.metric), {})
            if other:
                name = f"{series.title} {variant}" if series.metric == "accuracy" else variant
                axis.plot(sorted(other), [other[s][0] * series.scale for s in sorted(other)], linestyle="--",
                          marker=".", color=line.get_color(), alpha=0.7, label=name)
        if series.floor is not None:
            floor = values.get(("trained", *series.floor), {})
            if floor:
                axis.plot(sorted(floor), [floor[s][0] * series.scale for s in sorted(floor)], linestyle=":",
                          marker=".", color="gray", label="within-unit floor")
    if onset is not None:
        axis.axvline(onset, color="black", linewidth=0.8, alpha=0.5)
    axis.set(title=title, xlabel="pretraining step")
    axis.legend(frameon=False, fontsize=7)
