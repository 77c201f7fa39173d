"""The table and figure of `iclgd momentum`: vanilla vs momentum attention, over pretraining seeds, beside Dai et al.

Per variant: perplexity at each context length and ICL accuracy at each k, mean ± std over pretraining seeds (an
accuracy is first averaged over demo seeds), and the ICL onset step per seed; then each momentum variant minus
vanilla, paired within each pretraining seed, with its two-stage 95% bootstrap interval (seeds, then sequences on
log-perplexity or demo seeds on accuracy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from iclgd.runs import save_figure

DAI = ("Dai et al. (two 350M LMs, length 1024): perplexity 15.14 → 15.02 (Δ log-perplexity −0.008), "
       "ICL accuracy 51.9 → 54.7 % (+2.8 points)")


def _spread(values: Sequence[float]) -> tuple[float, float | None]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, None
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None


def _text(mean: float, std: float | None, digits: int, scale: float = 1.0) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean * scale:.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}")


def per_seed(rows: Sequence[dict[str, Any]], variant: str, measure: str, at: int | None) -> list[float]:
    """One value per pretraining seed (accuracy: the mean over its demo seeds)."""
    by_seed: dict[int, list[float]] = {}
    for row in rows:
        if row["variant"] == variant and row["measure"] == measure and row["at"] == at:
            by_seed.setdefault(row["seed"], []).append(row["value"])
    return [statistics.fmean(values) for _, values in sorted(by_seed.items())]


def momentum_table(rows: Sequence[dict[str, Any]]) -> Table:
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["seed"] is not None))
    lengths = sorted({r["at"] for r in rows if r["measure"] == "perplexity"})
    ks = sorted({r["at"] for r in rows if r["measure"] == "icl_accuracy"})
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    over = f"mean ± std over {len(seeds)} pretraining seeds" if len(seeds) > 1 else "one pretraining seed (no std)"
    table = Table(title=f"Momentum vs vanilla attention: {over}; "
                        "differences paired within each seed, [95% CI] by a two-stage bootstrap (seeds, then "
                        "sequences or demo seeds)",
                  caption=f"perplexity on held-out corpus sequences (the trained-on targets); ICL accuracy (%) on "
                          f"the held-out task, mean over demo seeds; onset: first logged step with the ICL probe "
                          f"≥ 0.9, per seed (— never)\n{DAI}")
    table.add_column("variant", no_wrap=True)
    for length in lengths:
        table.add_column(f"ppl @{length}", justify="right")
    for k in ks:
        table.add_column(f"acc k={k}", justify="right")
    table.add_column("onset step", justify="right")
    for variant in variants:
        cells = [_text(*_spread(per_seed(rows, variant, "perplexity", n)), 3) for n in lengths]
        cells += [_text(*_spread(per_seed(rows, variant, "icl_accuracy", k)), 1, 100) for k in ks]
        onsets = per_seed(rows, variant, "onset_step", None)
        cells.append(", ".join("—" if math.isnan(v) else f"{v:.0f}" for v in onsets))
        table.add_row(variant, *cells)
    for variant in dict.fromkeys(r["variant"] for r in rows if r["seed"] is None):
        table.add_section()
        found = {(r["measure"], r["at"]): r for r in rows if r["variant"] == variant}
        cells = []
        for measure, points, scale, digits in (("log_perplexity_difference", lengths, 1, 4),
                                               ("icl_accuracy_difference", ks, 100, 1)):
            for at in points:
                row = found.get((measure, at))
                cells.append("—" if row is None else f"{row['value'] * scale:+.{digits}f} "
                             f"[{row['ci_low'] * scale:+.{digits}f}, {row['ci_high'] * scale:+.{digits}f}]")
        table.add_row(f"{variant} (Δ log-ppl; Δ points)", *cells, "")
    return table


def plot_momentum(rows: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """Perplexity vs context length and ICL accuracy vs k, one line per variant (mean over pretraining seeds, band
    ± std)."""
    figure = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["seed"] is not None))
    for axis, measure, ylabel, scale in ((left, "perplexity", "perplexity (held-out sequences)", 1.0),
                                         (right, "icl_accuracy", "ICL accuracy (%)", 100.0)):
        points = sorted({r["at"] for r in rows if r["measure"] == measure})
        for variant in variants:
            spreads = [_spread(per_seed(rows, variant, measure, at)) for at in points]
            means = [m * scale for m, _ in spreads]
            line = axis.plot(points, means, marker="o", label=variant)[0]
            if all(s is not None for _, s in spreads):
                top = 100.0 if measure == "icl_accuracy" else math.inf  # a band of ± std stops at 100 %
                axis.fill_between(points, [(m - s) * scale for m, s in spreads],
                                  [min((m + s) * scale, top) for m, s in spreads], color=line.get_color(), alpha=0.2,
                                  linewidth=0)
        axis.set(xlabel="context length (tokens)" if measure == "perplexity" else "demonstrations k", ylabel=ylabel)
        axis.legend(frameon=False)
    figure.tight_layout()
    return save_figure(figure, stem)
