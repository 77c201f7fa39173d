"""SimAOU, SimAM, SimAM_Δ and α (Dai et al. 2023; Deutch et al. 2024), with their baselines.

Shapes. Attention outputs h: [N examples, L layers, d_model], taken at the analysis position.
Pre-softmax logits m: [N, L, H heads, T] over the test-example tokens, right-padded with zeros to the
longest example, with ``lengths`` [N] the true number of tokens. Padding zeros add nothing to a dot
product or a norm, and a difference of two zero paddings is zero, so cosines of padded vectors are
exact; ``lengths`` only makes sure the padding is zero (anything past it is ignored).

Every function returns a :class:`~iclgd.metrics.cosine.LayerAverage`: per-example per-layer values,
the per-layer means and the mean (heads, then examples, then layers), and per-layer counts of the cases
set to 0 because a vector (or a difference whose norm is below 1e-6 of the ZS reference) was zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from iclgd.metrics.cosine import LayerAverage, average_cosines, check_shapes, cosine


def check_lengths(m: Tensor, lengths: Tensor | None) -> None:
    """``lengths`` [N] must give each example's true token count within m's T positions."""
    if lengths is None:
        return
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (m.shape[0],) or bool(((lengths < 0) | (lengths > m.shape[-1])).any()):
        raise ValueError(f"lengths {lengths.tolist()} must be {m.shape[0]} token counts in 0..{m.shape[-1]} (one per "
                         f"example of m {list(m.shape)})")


def _unit(h: Tensor) -> Tensor:
    """ĥ = h / |h| (0 stays 0)."""
    h = h.double()
    norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    return h / torch.where(norm == 0, torch.ones_like(norm), norm)


def mask_padding(m: Tensor, lengths: Tensor | None) -> Tensor:
    """m [N, L, H, T] with positions t >= lengths[n] set to 0 (lengths None: m unchanged)."""
    if lengths is None:
        return m
    check_lengths(m, lengths)
    lengths = torch.as_tensor(lengths)
    positions = torch.arange(m.shape[-1], device=m.device)
    keep = positions[None, :] < lengths.to(m.device)[:, None]  # [N, T]
    return torch.where(keep[:, None, None, :], m, torch.zeros((), dtype=m.dtype, device=m.device))


# ---- SimAOU: attention outputs ----

def simaou_norm(h_icl: Tensor, h_zs: Tensor, h_ft: Tensor) -> LayerAverage:
    """SimAOU_norm (Dai's code): s(i,l) = cos(ĥ_ICL − ĥ_ZS, ĥ_FT − ĥ_ZS), ĥ = h/|h| first.

    A Δ with |Δ| < 1e-6 · |ĥ_ZS| (= 1e-6) counts as zero.
    """
    check_shapes("[N, L, d]", h_icl=h_icl, h_zs=h_zs, h_ft=h_ft)
    u_icl, u_zs, u_ft = _unit(h_icl), _unit(h_zs), _unit(h_ft)
    return average_cosines(cosine(u_icl - u_zs, u_ft - u_zs, reference=u_zs))


def simaou(h_icl: Tensor, h_zs: Tensor, h_ft: Tensor) -> LayerAverage:
    """SimAOU (unnormalised, Deutch et al.): s(i,l) = cos(h_ICL − h_ZS, h_FT − h_ZS).

    A Δ with |Δ| < 1e-6 · |h_ZS| counts as zero.
    """
    check_shapes("[N, L, d]", h_icl=h_icl, h_zs=h_zs, h_ft=h_ft)
    h_icl, h_zs, h_ft = h_icl.double(), h_zs.double(), h_ft.double()
    return average_cosines(cosine(h_icl - h_zs, h_ft - h_zs, reference=h_zs))


def simaou_random(h_icl: Tensor, h_zs: Tensor, u: Tensor, normalised: bool = True) -> LayerAverage:
    """Dai's random baseline: s(i,l) = cos(ĥ_ICL − ĥ_ZS, u), u ~ Uniform[0,1)^d, one u per (i, l).

    ``u`` has h's shape [N, L, d]; draw it per example with :func:`iclgd.metrics.draws.uniform_per_example`
    so that the baseline does not depend on batching. ``normalised=False`` gives the same baseline for
    unnormalised SimAOU: cos(h_ICL − h_ZS, u).
    """
    check_shapes("[N, L, d]", h_icl=h_icl, h_zs=h_zs, u=u)
    if normalised:
        h_icl, h_zs = _unit(h_icl), _unit(h_zs)
    else:
        h_icl, h_zs = h_icl.double(), h_zs.double()
    return average_cosines(cosine(h_icl - h_zs, u.double(), reference=h_zs))


def simaou_better_random(h_icl: Tensor, h_zs: Tensor, h_rand: Tensor, normalised: bool) -> LayerAverage:
    """Our random baseline: cos(Δ_ICL, Δ_rand), Δ_rand = h_rand − h_ZS.

    h_rand is captured with the trained tensors moved in a random Gaussian direction scaled, per tensor,
    to the Frobenius norm of that tensor's FT change. ``normalised`` picks the SimAOU_norm variant (ĥ
    first) or the raw one; this is SimAOU with h_FT replaced by h_rand.
    """
    return simaou_norm(h_icl, h_zs, h_rand) if normalised else simaou(h_icl, h_zs, h_rand)


# ---- SimAM: pre-softmax attention logits over the test tokens ----

def simam(m_icl: Tensor, m_ft: Tensor, lengths: Tensor | None = None) -> LayerAverage:
    """SimAM (Dai): s(i,l,h) = cos(m_ICL, m_FT) on raw pre-softmax logits; mean heads, examples, layers."""
    check_shapes("[N, L, H, T]", m_icl=m_icl, m_ft=m_ft)
    return average_cosines(cosine(mask_padding(m_icl, lengths), mask_padding(m_ft, lengths)))


def simam_before_ft(m_icl: Tensor, m_zs: Tensor, lengths: Tensor | None = None) -> LayerAverage:
    """The "before finetuning" baseline of SimAM: s(i,l,h) = cos(m_ICL, m_ZS)."""
    return simam(m_icl, m_zs, lengths)


def simam_delta(m_icl: Tensor, m_zs: Tensor, m_ft: Tensor, lengths: Tensor | None = None, *,
                icl_unchanged_layers: Sequence[int] = ()) -> LayerAverage:
    """SimAM_Δ (Deutch et al.): s(i,l,h) = cos(m_ICL − m_ZS, m_FT − m_ZS).

    A Δ with |Δ| < 1e-6 · |m_ZS| counts as zero (cosine 0, counted per layer). ``icl_unchanged_layers``: layers
    whose scores over the test tokens are the same with and without demos by construction (layer 0 in rotary
    families: they depend only on token ids and relative offsets), where Δ_ICL is rounding noise and is zero: that
    noise grows with the prefix's positions and with a 16-bit dtype past any fixed tolerance (2.7e-6 of |m_ZS| at
    a 1 000-token prefix in float32, 1e-2 in bfloat16), so it is set to zero rather than tested.
    """
    check_shapes("[N, L, H, T]", m_icl=m_icl, m_zs=m_zs, m_ft=m_ft)
    m_icl, m_zs, m_ft = (mask_padding(m.double(), lengths) for m in (m_icl, m_zs, m_ft))
    delta_icl = m_icl - m_zs
    for layer in icl_unchanged_layers:
        delta_icl[:, layer] = 0.0
    return average_cosines(cosine(delta_icl, m_ft - m_zs, reference=m_zs))


def alpha(m_lcgd: Tensor, m_gd: Tensor, m_zs: Tensor, lengths: Tensor | None = None) -> LayerAverage:
    """α (Deutch et al., Fig. 2): SimAM_Δ between two finetuning updates, cos(m_LCGD − m_ZS, m_GD − m_ZS)."""
    return simam_delta(m_lcgd, m_zs, m_gd, lengths)
