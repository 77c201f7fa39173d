"""Uncertainty over examples: percentile bootstrap confidence intervals of a mean.

A unit's score is a mean over its eval examples (of per-example values that are themselves means over heads and
layers); resampling the examples with replacement says how much it would move with another draw of eval rows of
the same task. The resamples are seeded, so an interval is reproducible, and depend only on the number of
examples, so they do not depend on batching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from iclgd.metrics.draws import example_seed


def _check_settings(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level is a fraction in (0, 1), e.g. 0.95 for a 95% interval; got {level!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples!r}")


def bootstrap_ci(values: Tensor, seed: int, stream: str, *, resamples: int = 1000, level: float = 0.95,
                 chunk: int = 100) -> tuple[Tensor, Tensor]:
    """(low, high) of the mean over the first dimension, for every trailing entry: values [N, ...] -> [...] each.

    Percentile interval over ``resamples`` resamplings of the N examples with replacement, drawn from a generator
    seeded by (seed, stream). NaN where N is 0. Resamples are taken ``chunk`` at a time (memory: chunk x N x ...).
    """
    _check_settings(level, resamples)
    values = torch.as_tensor(values).double()
    n = values.shape[0]
    if n == 0:
        nan = torch.full(values.shape[1:], float("nan"), dtype=torch.float64)
        return nan, nan.clone()
    generator = torch.Generator().manual_seed(example_seed(seed, n, f"bootstrap/{stream}"))
    means = []
    for start in range(0, resamples, chunk):
        rows = torch.randint(n, (min(chunk, resamples - start), n), generator=generator)
        means.append(values[rows].mean(1))
    tail = (1 - level) / 2
    bounds = torch.quantile(torch.cat(means), torch.tensor([tail, 1 - tail], dtype=torch.float64), dim=0)
    return bounds[0], bounds[1]


def bootstrap_ratio_ci(numerator: Tensor, denominator: Tensor, seed: int, stream: str, *, resamples: int = 1000,
                       level: float = 0.95) -> tuple[float, float]:
    """(low, high) of Σ numerator / Σ denominator over resampled examples ([N] each): the interval of a ratio of
    counts such as Rec2FTP. Resamples whose denominator sums to 0 are left out; NaN when all are."""
    _check_settings(level, resamples)
    numerator = torch.as_tensor(numerator).double().flatten()
    denominator = torch.as_tensor(denominator).double().flatten()
    if numerator.shape != denominator.shape:
        raise ValueError(f"numerator {list(numerator.shape)} and denominator {list(denominator.shape)} must be one "
                         "count per example each")
    n = numerator.shape[0]
    if n == 0:
        return math.nan, math.nan
    generator = torch.Generator().manual_seed(example_seed(seed, n, f"bootstrap/{stream}"))
    rows = torch.randint(n, (resamples, n), generator=generator)
    over, under = numerator[rows].sum(1), denominator[rows].sum(1)
    ratios = (over / under)[under > 0]
    if ratios.numel() == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = torch.quantile(ratios, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)


def cluster_bootstrap_ci(groups: Sequence[Tensor], seed: int, stream: str, *, resamples: int = 1000,
                         level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over ``groups`` of each group's mean, with a two-stage percentile bootstrap:
    each resample draws groups with replacement, then the values within each drawn group. The interval of an
    effect measured on several runs (pretraining seeds, the groups) and many examples within each: it carries the
    spread between runs, which pooling the examples of all runs would hide."""
    _check_settings(level, resamples)
    groups = [torch.as_tensor(g).double().flatten() for g in groups]
    if not groups or any(g.numel() == 0 for g in groups):
        return math.nan, math.nan, math.nan
    generator = torch.Generator().manual_seed(example_seed(seed, len(groups), f"cluster/{stream}"))
    means = torch.empty(resamples, dtype=torch.float64)
    for r in range(resamples):
        picked = torch.randint(len(groups), (len(groups),), generator=generator).tolist()
        means[r] = torch.stack([groups[g][torch.randint(groups[g].numel(), (groups[g].numel(),),
                                                        generator=generator)].mean() for g in picked]).mean()
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(torch.stack([g.mean() for g in groups]).mean()), float(low), float(high)
