"""Tables and plots of the weight-space analyses (:mod:`iclgd.experiments.weights`).

Sparsity rows are any objects (or dicts) with ``matrix``, ``layer`` (None: mean over layers), ``threshold``,
``sparsity`` and ``construction``; accuracy points have ``method`` ("icl" | "zs"), ``seed``, ``relative_change``,
``accuracy`` and either ``sigma`` (perturbation) or ``step`` (checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from iclgd.runs import save_figure

MATRIX_NAMES = ("W_Q", "W_K", "W_V")
COLOURS = {"W_Q": "tab:blue", "W_K": "tab:orange", "W_V": "tab:green"}


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_sparsity(rows: Sequence[Any]) -> dict[tuple[str, float], float]:
    """(matrix, δ) -> sparsity averaged over layers (the rows with layer None)."""
    return {(_get(r, "matrix"), _get(r, "threshold")): _get(r, "sparsity") for r in rows if _get(r, "layer") is None}


def accuracy_by(points: Sequence[Any], key: str, method: str = "icl") -> dict[Any, tuple[float, float, float, float]]:
    """``key`` value (σ or step) -> (relative change, mean accuracy over seeds, min, max) of ``method``."""
    grouped: dict[Any, list[Any]] = {}
    for p in points:
        if p.method == method:
            grouped.setdefault(getattr(p, key), []).append(p)
    return {value: (_mean([p.relative_change for p in group]), _mean([p.accuracy for p in group]),
                    min(p.accuracy for p in group), max(p.accuracy for p in group))
            for value, group in sorted(grouped.items())}


# ----------------------------------------------------------------------------------------------------------
# Tables


def sparsity_table(rows: Sequence[Any], title: str = "", caption: str = "") -> Table:
    """One row per δ: each matrix's sparsity, mean over layers (min–max over layers), then the construction's."""
    table = Table(title=title, caption=caption)
    table.add_column("δ", justify="right")
    for name in MATRIX_NAMES:
        table.add_column(f"{name} (layers min–max)", justify="right")
    thresholds = sorted({_get(r, "threshold") for r in rows}, reverse=True)
    for delta in thresholds:
        cells = []
        for name in MATRIX_NAMES:
            per_layer = [_get(r, "sparsity") for r in rows if _get(r, "matrix") == name
                         and _get(r, "threshold") == delta and _get(r, "layer") is not None]
            mean = mean_sparsity(rows)[(name, delta)]
            cells.append(f"{100 * mean:.2f}% ({100 * min(per_layer):.2f}–{100 * max(per_layer):.2f})")
        table.add_row(f"{delta:.0e}", *cells)
    construction = {_get(r, "matrix"): _get(r, "construction") for r in rows}
    table.add_row("construction", *(f"{100 * construction[name]:.4f}%" for name in MATRIX_NAMES), style="bold")
    return table


def perturb_table(points: Sequence[Any], title: str = "", caption: str = "") -> Table:
    """One row per σ: relative weight change and ICL accuracy (mean over seeds); zero-shot last."""
    table = Table(title=title, caption=caption)
    for column in ("σ", "|ΔW|/|W| (all)", "mean over matrices", "ICL accuracy", "min–max over seeds"):
        table.add_column(column, justify="right")
    mean_change = {p.sigma: p.mean_relative_change for p in points if p.method == "icl"}
    for sigma, (change, accuracy, low, high) in accuracy_by(points, "sigma").items():
        table.add_row(f"{sigma:.0e}" if sigma else "0", f"{change:.4g}", f"{mean_change[sigma]:.4g}",
                      f"{accuracy:.3f}", f"{low:.3f}–{high:.3f}")
    for p in points:
        if p.method == "zs":
            table.add_row("zero-shot", "0", "0", f"{p.accuracy:.3f}", "", style="dim")
    return table


def checkpoint_table(points: Sequence[Any], sparsity_rows: Sequence[dict[str, Any]], title: str = "",
                     caption: str = "") -> Table:
    """One row per checkpoint: relative change to the reference, ICL and zero-shot accuracy, and the mean sparsity of
    W_Q / W_K / W_V at each δ."""
    table = Table(title=title, caption=caption)
    for column in ("step", "|ΔW|/|W|", "ICL accuracy", "zero-shot"):
        table.add_column(column, justify="right")
    thresholds = sorted({r["threshold"] for r in sparsity_rows}, reverse=True)
    for delta in thresholds:
        table.add_column(f"Q/K/V % < {delta:.0e}", justify="right")
    icl, zs = accuracy_by(points, "step"), accuracy_by(points, "step", "zs")
    for step, (change, accuracy, _, _) in icl.items():
        sparsity = mean_sparsity([r for r in sparsity_rows if r["step"] == step])
        table.add_row(str(step), f"{change:.4g}", f"{accuracy:.3f}", f"{zs[step][1]:.3f}",
                      *("/".join(f"{100 * sparsity[(name, delta)]:.1f}" for name in MATRIX_NAMES)
                        for delta in thresholds))
    return table


# ----------------------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _construction_lines(ax, rows: Sequence[Any]) -> None:
    construction = {_get(r, "matrix"): _get(r, "construction") for r in rows}
    ax.axhline(construction["W_K"], color="black", linestyle="--", linewidth=1,
               label=f"construction W_Q, W_K ({100 * construction['W_K']:.3f}%)")
    ax.axhline(construction["W_V"], color="tab:green", linestyle="--", linewidth=1,
               label=f"construction W_V ({100 * construction['W_V']:.3f}%)")


def plot_sparsity(rows: Sequence[Any], out_prefix: str | Path, title: str = "") -> list[Path]:
    """Sparsity vs δ: each matrix's mean over layers (line) and its layers (dots), with the construction's need
    (dashed); writes <prefix>.png and .pdf."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    means = mean_sparsity(rows)
    thresholds = sorted({_get(r, "threshold") for r in rows})
    for name in MATRIX_NAMES:
        layers = [r for r in rows if _get(r, "matrix") == name and _get(r, "layer") is not None]
        ax.scatter([_get(r, "threshold") for r in layers], [_get(r, "sparsity") for r in layers], s=6, alpha=0.3,
                   color=COLOURS[name])
        ax.plot(thresholds, [means[(name, d)] for d in thresholds], marker="o", color=COLOURS[name],
                label=f"{name} (mean over layers)")
    _construction_lines(ax, rows)
    ax.set_xscale("log")
    ax.set_xlabel("threshold δ (sparsity: fraction of |w| < δ)")
    ax.set_ylabel("sparsity")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_prefix)


def _reference_lines(ax, chance: float | None, majority: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    if majority is not None:
        ax.axhline(majority, color="grey", linestyle="-.", linewidth=1, label="majority label")


def plot_accuracy_vs_change(points: Sequence[Any], out_prefix: str | Path, chance: float | None = None,
                            majority: float | None = None, title: str = "") -> list[Path]:
    """ICL accuracy (mean over seeds, min–max bars) against the relative weight change the noise made, each point
    labelled with its σ; the unperturbed ICL accuracy, zero-shot and chance as horizontal lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    curve = accuracy_by(points, "sigma")
    noisy = [(sigma, values) for sigma, values in curve.items() if sigma > 0]
    if noisy:
        x = [values[0] for _, values in noisy]
        y = [values[1] for _, values in noisy]
        errors = [[values[1] - values[2] for _, values in noisy], [values[3] - values[1] for _, values in noisy]]
        ax.errorbar(x, y, yerr=errors, marker="o", capsize=2, label="ICL, weights + N(0, σ²)")
        for (sigma, _), xi, yi in zip(noisy, x, y, strict=True):
            ax.annotate(f"σ={sigma:.0e}", (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=7)
        ax.set_xscale("log")
    if 0.0 in curve:
        ax.axhline(curve[0.0][1], color="tab:blue", linewidth=1, alpha=0.6, label="ICL, original weights")
    for p in points:
        if p.method == "zs":
            ax.axhline(p.accuracy, color="tab:red", linestyle="--", linewidth=1, label="zero-shot")
    _accuracy_axes(ax, "relative weight change |ΔW|_F / |W|_F", title, chance, majority)
    fig.tight_layout()
    return save_figure(fig, out_prefix)


def _accuracy_axes(ax, xlabel: str, title: str, chance: float | None, majority: float | None) -> None:
    """An accuracy-vs-weight-change panel: chance and majority lines, labels, the [0, 1] range, the legend."""
    _reference_lines(ax, chance, majority)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot_checkpoints(points: Sequence[Any], sparsity_rows: Sequence[dict[str, Any]], out_prefix: str | Path,
                     chance: float | None = None, majority: float | None = None, title: str = "") -> list[Path]:
    """Left: ICL and zero-shot accuracy against the relative change to the reference checkpoint, labelled by step.
    Then one panel per matrix: its sparsity (mean over layers) against the step, a line per δ, with the
    construction's need."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    for method, label in (("icl", "ICL"), ("zs", "zero-shot")):
        curve = accuracy_by(points, "step", method)
        x = [values[0] for values in curve.values()]
        ax.plot(x, [values[1] for values in curve.values()], marker="o", label=label)
        if method == "icl":  # about eight step labels, the last one always: more overlap
            every = max(1, len(curve) // 8)
            for i, (step, (xi, yi, _, _)) in enumerate(curve.items()):
                if i % every == 0 or i == len(curve) - 1:
                    ax.annotate(str(step), (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=6)
    _accuracy_axes(ax, "relative weight change to the reference |ΔW|_F / |W|_F", title, chance, majority)
    steps = sorted({r["step"] for r in sparsity_rows})
    thresholds = sorted({r["threshold"] for r in sparsity_rows}, reverse=True)
    means = {step: mean_sparsity([r for r in sparsity_rows if r["step"] == step]) for step in steps}
    for ax, name in zip(axes[1:], MATRIX_NAMES, strict=True):
        for delta in thresholds:
            ax.plot(steps, [means[step][(name, delta)] for step in steps], marker=".", label=f"δ = {delta:.0e}")
        construction = next(r["construction"] for r in sparsity_rows if r["matrix"] == name)
        ax.axhline(construction, color="black", linestyle="--", linewidth=1, label="construction")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{name} sparsity (mean over layers)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out_prefix)
