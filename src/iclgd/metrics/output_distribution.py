"""Output-distribution metrics (Shen et al. 2024) on full next-token distributions p [..., V].

Inputs are probabilities (softmax of the logits at the answer position), or log-probabilities for the ``_logprobs``
forms of KL and JS and for :data:`OUTPUT_METRICS`; metrics are per row, over the last dimension, computed in float64.
Logs are natural.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from iclgd.metrics.cosine import running_norm, running_sum


def _top_k_mask(p: Tensor, k: int) -> Tensor:
    """Bool mask of the k most probable entries of each row."""
    if not 1 <= k <= p.shape[-1]:
        raise ValueError(f"k must be in [1, {p.shape[-1]}], got {k}")
    index = p.topk(k, dim=-1).indices
    return torch.zeros_like(p, dtype=torch.bool).scatter_(-1, index, True)


def _same_shape(p1: Tensor, p2: Tensor) -> None:
    """p1 and p2 must be distributions of one shape: finite, non-negative, with mass in every row (logits or
    log-probabilities passed by mistake would give NaN)."""
    if p1.shape != p2.shape or p1.dim() == 0:
        raise ValueError(f"p1 {list(p1.shape)} and p2 {list(p2.shape)} must be distributions of one shape [..., vocab]")
    for name, p in (("p1", p1), ("p2", p2)):
        mass = p.sum(-1, dtype=torch.float64)  # finite where every entry is (float64 holds any float32 row's sum)
        if not (bool((p >= 0).all()) and bool(torch.isfinite(mass).all()) and bool((mass > 0).all())):
            raise ValueError(f"{name} is not a probability distribution over its last dimension (NaN, inf, a "
                             "negative value, or a row without mass): pass probabilities, e.g. logits.softmax(-1)")


def token_overlap(p1: Tensor, p2: Tensor, k: int = 10) -> Tensor:
    """TO@K = |top_K(p1) ∩ top_K(p2)| / K."""
    _same_shape(p1, p2)
    both = _top_k_mask(p1, k) & _top_k_mask(p2, k)
    return both.sum(-1).double() / k


def overlap_cosine(p1: Tensor, p2: Tensor, k: int = 10) -> Tensor:
    """OCS@K, our reading of Shen et al.'s ill-defined formula:

    Σ_{t ∈ O} p1(t) p2(t) / (‖p1 on top_K(p1)‖₂ · ‖p2 on top_K(p2)‖₂), O = top_K(p1) ∩ top_K(p2).
    1 when both top-K sets and their probabilities coincide, 0 when the sets are disjoint.
    """
    _same_shape(p1, p2)
    p1, p2 = p1.double(), p2.double()
    top1, top2 = _top_k_mask(p1, k), _top_k_mask(p2, k)
    zero = torch.zeros((), dtype=p1.dtype, device=p1.device)
    numerator = running_sum(torch.where(top1 & top2, p1 * p2, zero))
    norm1 = running_norm(torch.where(top1, p1, zero))
    norm2 = running_norm(torch.where(top2, p2, zero))
    return numerator / (norm1 * norm2)


def kl_divergence(p1: Tensor, p2: Tensor) -> Tensor:
    """KL(p1 ‖ p2) = Σ_v p1(v) (log p1(v) − log p2(v)), with 0 log 0 = 0 (inf if p2(v) = 0 < p1(v))."""
    _same_shape(p1, p2)
    p1, p2 = p1.double(), p2.double()
    return running_sum(torch.special.xlogy(p1, p1) - torch.special.xlogy(p1, p2))


def js_divergence(p1: Tensor, p2: Tensor) -> Tensor:
    """JS(p1, p2) = ½ KL(p1 ‖ m) + ½ KL(p2 ‖ m), m = ½ (p1 + p2); symmetric, in [0, log 2]."""
    _same_shape(p1, p2)
    p1, p2 = p1.double(), p2.double()
    m = 0.5 * (p1 + p2)
    return 0.5 * kl_divergence(p1, m) + 0.5 * kl_divergence(p2, m)


def _same_shape_log(lp1: Tensor, lp2: Tensor) -> None:
    """lp1 and lp2 must be log-distributions of one shape: no NaN, no +inf, a finite entry in every row."""
    if lp1.shape != lp2.shape or lp1.dim() == 0:
        raise ValueError(f"lp1 {list(lp1.shape)} and lp2 {list(lp2.shape)} must be log-distributions of one shape "
                         "[..., vocab]")
    for name, lp in (("lp1", lp1), ("lp2", lp2)):
        if bool(lp.isnan().any()) or bool((lp == float("inf")).any()) or not bool(lp.isfinite().any(-1).all()):
            raise ValueError(f"{name} is not a log-probability distribution over its last dimension (NaN, +inf, or "
                             "a row without a finite entry): pass log-probabilities, e.g. logits.log_softmax(-1)")


def kl_divergence_logprobs(lp1: Tensor, lp2: Tensor) -> Tensor:
    """KL(p1 ‖ p2) from log-probabilities: Σ_v p1(v) (log p1(v) − log p2(v)), 0 where p1(v) is 0 in float64 (log p1
    = −inf, or below −745), as the probability form counts it.

    The same value as :func:`kl_divergence` on ``lp.exp()``, except where p2's probability underflows: a token at
    log-prob −900 under p2 and −700 under p1 adds ~1e-304 here, and inf there (exp(−900) is 0 in float64)."""
    _same_shape_log(lp1, lp2)
    lp1, lp2 = lp1.double(), lp2.double()
    p1 = lp1.exp()
    terms = torch.where(p1 == 0, torch.zeros((), dtype=p1.dtype), p1 * (lp1 - lp2))  # 0·inf would be NaN
    return running_sum(terms)


def js_divergence_logprobs(lp1: Tensor, lp2: Tensor) -> Tensor:
    """JS(p1, p2) from log-probabilities, m = ½ (p1 + p2) taken in log space (no underflow); in [0, log 2]."""
    _same_shape_log(lp1, lp2)
    lp1, lp2 = lp1.double(), lp2.double()
    log_m = torch.logaddexp(lp1, lp2) - math.log(2.0)
    return 0.5 * kl_divergence_logprobs(lp1, log_m) + 0.5 * kl_divergence_logprobs(lp2, log_m)


def order_sensitivity_per_example(p: Tensor) -> Tensor:
    """Σ_v std_{π ∈ Π} p^π(v | x) per example x, population std (ddof=0); p: [Π orderings, N examples, V]."""
    if p.dim() != 3:
        raise ValueError(f"expected p of shape [orderings, examples, vocab], got {tuple(p.shape)}")
    if p.shape[0] < 2:  # one ordering has no spread to measure: 0 would read as order-invariant
        raise ValueError(f"order sensitivity needs at least two orderings, got {p.shape[0]}")
    return running_sum(p.double().std(dim=0, correction=0))


def order_sensitivity(p: Tensor) -> float:
    """Sen = mean_x Σ_v std_{π ∈ Π} p^π(v | x), population std (ddof=0).

    p: [Π orderings, N examples, V] the distributions of one method under each ordering of the same demos.
    """
    return float(order_sensitivity_per_example(p).mean())


class RunningOrderSpread:
    """Sen accumulated one ordering at a time (Welford's mean and sum of squared deviations per example and token),
    for methods that train once per ordering, so that no ordering's distributions need to be kept.

    Identical distributions leave the deviations exactly 0 (Sen = 0, not rounding noise). float32 by default:
    [N, V] twice per accumulator.
    """

    def __init__(self, n_examples: int, vocab: int, dtype: torch.dtype = torch.float32) -> None:
        self.count = torch.zeros(n_examples, dtype=torch.long)
        self.mean = torch.zeros(n_examples, vocab, dtype=dtype)
        self.m2 = torch.zeros(n_examples, vocab, dtype=dtype)

    def add(self, examples: Tensor, p: Tensor) -> None:
        """One ordering's distributions ``p`` [B, V] of the eval examples ``examples`` [B] (indices)."""
        self.count[examples] += 1
        n = self.count[examples].to(self.mean.dtype)[:, None]
        p = p.to(device=self.mean.device, dtype=self.mean.dtype)
        delta = p - self.mean[examples]
        mean = self.mean[examples] + delta / n
        self.m2[examples] += delta * (p - mean)
        self.mean[examples] = mean

    def per_example(self) -> Tensor:
        """Σ_v std_π p^π(v | x) per example, float64 [N]."""
        if int(self.count.min()) < 2:
            raise ValueError("order sensitivity needs every example under at least two orderings")
        variance = (self.m2.double() / self.count.double()[:, None]).clamp_min(0)
        return running_sum(variance.sqrt())


def order_pair_reference_per_example(metric: Callable[[Tensor, Tensor], Tensor], p: Tensor) -> Tensor:
    """Per example: the mean over ordered pairs (π, π'), π ≠ π', of metric(p^π, p^π'); p: [Π, N, V]."""
    if p.shape[0] < 2:
        raise ValueError("the order reference needs at least two orderings")
    pairs = [metric(p[i], p[j]).double() for i, j in itertools.permutations(range(p.shape[0]), 2)]
    return sum(pairs[1:], pairs[0]) / len(pairs)  # added in pair order, example by example


def order_pair_reference(metric: Callable[[Tensor, Tensor], Tensor], p: Tensor) -> float:
    """Noise floor: mean over ordered pairs (π, π') with π ≠ π' of mean_x metric(p^π, p^π').

    p: [Π, N, V], e.g. ICL under |Π| orderings of the same demos. Ordered pairs make asymmetric
    metrics (KL) well defined; for symmetric ones the mean equals that over unordered pairs.
    """
    return float(order_pair_reference_per_example(metric, p).mean())


# The output-distribution metrics a unit reports, name -> metric(log p_icl, log p_other) per row (spec: K = 10):
# they take log-probabilities, so KL and JS stay in log space where a probability would underflow to 0.
OUTPUT_METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "to@10": lambda lp1, lp2: token_overlap(lp1.double().exp(), lp2.double().exp(), 10),
    "ocs@10": lambda lp1, lp2: overlap_cosine(lp1.double().exp(), lp2.double().exp(), 10),
    "kl": kl_divergence_logprobs,
    "js": js_divergence_logprobs,
}
