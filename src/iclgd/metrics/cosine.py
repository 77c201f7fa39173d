"""Cosine similarity that never gives NaN, and the uniform layer averages every metric reports.

cos(a, b) = a·b / (|a| |b|) over the last dimension. A vector that is zero, or (for a difference Δ) whose
norm is below ``rel_tol`` (1e-6) of a reference norm (|m_ZS| for SimAM_Δ, |h_ZS| for SimAOU), counts as
zero: its cosine is 0 and it is counted, so results can say how many such cases went into an average.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

REL_TOL = 1e-6


@dataclass(frozen=True)
class Cosines:
    """Cosines over the last dimension; ``zero`` marks the cases set to 0 (a vector counted as zero)."""

    values: Tensor
    zero: Tensor  # bool, same shape as values

    @property
    def zero_count(self) -> int:
        return int(self.zero.sum())


def check_shapes(layout: str, **tensors: Tensor) -> None:
    """Raise ValueError unless every tensor has ``layout``'s dimensions (e.g. "[N, L, d]") and all share one shape."""
    rank = layout.count(",") + 1
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if any(len(shape) != rank for shape in shapes.values()) or len(set(shapes.values())) > 1:
        given = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"expected {', '.join(shapes)} of one shape {layout}, got {given}")


def check_finite(**tensors: Tensor) -> None:
    """Raise ValueError naming the first tensor holding NaN or inf: a metric of it would be NaN (or a NaN read as a
    tie), silently; NaN comes from upstream (a dtype that overflows, a diverged FT), which is where to look."""
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or inf, so its metric would be NaN: find where it came from (a dtype "
                             "that overflows, a diverged FT) rather than averaging it")


def running_sum(x: Tensor) -> Tensor:
    """Σ over the last dimension in index order (a running sum's last entry), so that a row's bits do not depend on
    its batch: a vectorised sum groups a row's terms by the row's padded length (pre-softmax scores are right-padded
    with zeros to their batch's longest example; trailing zeros leave a running sum as it was), and splits one long
    row (a vocabulary) across threads where there are few rows, but not where there are many."""
    if x.shape[-1] == 0:
        return x.sum(-1)
    return x.cumsum(-1)[..., -1]


def running_norm(v: Tensor) -> Tensor:
    """|v| over the last dimension, its squares summed by :func:`running_sum`."""
    return running_sum(v * v).sqrt()


def is_zero(v: Tensor, reference: Tensor | None = None, rel_tol: float = REL_TOL) -> Tensor:
    """True where |v| = 0, or |v| < rel_tol · |reference| (norms over the last dimension)."""
    norm = running_norm(v)
    zero = norm == 0
    if reference is not None:
        zero = zero | (norm < rel_tol * running_norm(reference))
    return zero


def cosine(
    a: Tensor, b: Tensor, reference: Tensor | None = None, rel_tol: float = REL_TOL
) -> Cosines:
    """cos(a, b) = a·b / (|a||b|) over the last dimension, batched over the leading ones.

    0 (never NaN) where a or b is zero, or, given ``reference``, where |a| or |b| < rel_tol · |reference|
    (for differences Δ = x − x_ZS pass reference = x_ZS). Computed in float64 for stability.
    """
    if a.shape != b.shape or (reference is not None and reference.shape != a.shape):
        shapes = f"a {list(a.shape)}, b {list(b.shape)}" + (f", reference {list(reference.shape)}"
                                                            if reference is not None else "")
        raise ValueError(f"cosine needs tensors of one shape, got {shapes}")
    check_finite(a=a, b=b, **({} if reference is None else {"reference": reference}))
    a64, b64 = a.double(), b.double()
    ref64 = None if reference is None else reference.double()
    zero = is_zero(a64, ref64, rel_tol) | is_zero(b64, ref64, rel_tol)
    denominator = running_norm(a64) * running_norm(b64)
    values = running_sum(a64 * b64) / torch.where(zero, torch.ones_like(denominator), denominator)
    values = torch.where(zero, torch.zeros_like(values), values)
    return Cosines(values=values, zero=zero)


@dataclass(frozen=True)
class LayerAverage:
    """A metric's per-example per-layer values, its per-layer means and the overall mean.

    ``per_example`` is [N, L] (after averaging heads, if there were heads); ``per_layer`` is the list of L
    means over examples; ``mean`` the mean over layers; ``zero_per_example`` [N, L] and ``zero_per_layer``
    count the cases (examples, or example-head pairs) set to 0 because a vector counted as zero. Batches
    accumulate by concatenating ``per_example`` and ``zero_per_example`` over examples.
    """

    per_example: Tensor
    per_layer: list[float]
    mean: float
    zero_per_example: Tensor
    zero_per_layer: list[int]

    @property
    def zero_count(self) -> int:
        return sum(self.zero_per_layer)


def layer_average(values: Tensor, zero: Tensor | None = None) -> LayerAverage:
    """Uniform averages: values [N, L] or [N, L, H] -> mean over heads, then examples, then layers."""
    if values.dim() not in (2, 3):
        raise ValueError(f"expected values of shape [N, L] or [N, L, H], got {tuple(values.shape)}")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"no examples or no layers to average (values of shape {tuple(values.shape)}): a mean over "
                         "none would be NaN")
    per_example = values.mean(dim=2) if values.dim() == 3 else values
    per_layer = per_example.mean(dim=0)
    if zero is None:
        zero_per_example = torch.zeros(per_example.shape, dtype=torch.long)
    else:
        zero_per_example = (zero.sum(dim=2) if zero.dim() == 3 else zero).long()
    return LayerAverage(
        per_example=per_example,
        per_layer=[float(v) for v in per_layer],
        mean=float(per_layer.mean()),
        zero_per_example=zero_per_example,
        zero_per_layer=[int(c) for c in zero_per_example.sum(dim=0)],
    )


def average_cosines(cosines: Cosines) -> LayerAverage:
    """``layer_average`` of a batch of cosines [N, L] or [N, L, H], carrying the zero counts."""
    return layer_average(cosines.values, cosines.zero)
