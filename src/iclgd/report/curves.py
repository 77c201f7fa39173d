"""ICL curves (accuracy vs k): the mean over seeds per variant, and the plot.

Points are any objects with ``variant``, ``k`` and ``accuracy`` (``iclgd.experiments.icl_curve.CurvePoint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iclgd.runs import save_figure


def mean_by_k(points: Sequence[Any]) -> dict[str, dict[int, float]]:
    """variant -> k -> accuracy averaged over seeds."""
    table: dict[str, dict[int, list[float]]] = {}
    for p in points:
        table.setdefault(p.variant, {}).setdefault(p.k, []).append(p.accuracy)
    return {v: {k: sum(a) / len(a) for k, a in by_k.items()} for v, by_k in table.items()}


def plot_curve(points: Sequence[Any], out_prefix: str | Path, title: str = "", chance: float | None = None
               ) -> list[Path]:
    """Accuracy vs k (mean over seeds, min-max band), one line per variant; writes <prefix>.png and .pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iclgd.experiments.icl_curve import true_k_text

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    ks = sorted({p.k for p in points})
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for variant, by_k in mean_by_k(points).items():
        x = [max(k, 0.5) for k in ks]  # k = 0 drawn at 0.5 on the log axis
        accuracies = [[p.accuracy for p in points if p.variant == variant and p.k == k] for k in ks]
        ax.plot(x, [by_k[k] for k in ks], marker="o", label=variant)
        ax.fill_between(x, [min(a) for a in accuracies], [max(a) for a in accuracies], alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks([max(k, 0.5) for k in ks], [true_k_text(points, k).replace(" (", "\n(") for k in ks])
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_prefix)
