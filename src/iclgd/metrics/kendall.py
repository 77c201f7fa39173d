"""Kendall's τ between ICL's attention to the demo tokens and FT's query similarity to them (Dai et al.).

m_ICL^l[j] = Σ_h q_h · k_{h,j} / sqrt(d_head): the ICL analysis position's logits to demo token j, summed
over heads (captured by the model hooks). m_FT^l[j] = q_test^l · q_train,j^l over the full width, with
q_train,j recorded in the forward pass of the FT step that saw token j. Demo tokens: all tokens of all
demos, without BOS and separators, in the same order for ICL and FT.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from iclgd.metrics.cosine import LayerAverage, check_finite, check_shapes, layer_average


def ft_demo_logits(q_test: Tensor, q_train: Tensor) -> Tensor:
    """m_FT[n, l, j] = q_test[n, l] · q_train[l, j]: one matrix product per layer, [N, L, J].

    q_test: [N, L, D] the FT model's (scaled) analysis-position queries; q_train: [L, J, D] the (scaled)
    training-token queries. A batched matmul ([L, N, D] @ [L, D, J]); never a broadcast product, which
    would materialise [N, L, J, D].
    """
    if q_test.shape[1] != q_train.shape[0] or q_test.shape[2] != q_train.shape[2]:
        raise ValueError(f"q_test {tuple(q_test.shape)} and q_train {tuple(q_train.shape)} do not match")
    q_test = q_test.to(q_train.dtype)
    return torch.bmm(q_test.transpose(0, 1), q_train.transpose(1, 2)).transpose(0, 1)


def check_same_demo_tokens(icl_demo_tokens: Tensor, ft_demo_tokens: Tensor) -> None:
    """The j-th demo token of ICL and of FT must be the same token; raise ValueError where they differ."""
    icl, ft = torch.as_tensor(icl_demo_tokens).flatten(), torch.as_tensor(ft_demo_tokens).flatten()
    if icl.shape != ft.shape:
        raise ValueError(f"ICL has {icl.numel()} demo tokens but FT saw {ft.numel()}: they must be the same")
    differ = (icl != ft).nonzero().flatten()
    if differ.numel():
        j = int(differ[0])
        raise ValueError(f"demo token {j} differs: ICL {int(icl[j])}, FT {int(ft[j])} ({differ.numel()} differ)")


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau  # here: scipy.stats takes ~0.6 s to import, which icl-curve skips

    return float(kendalltau(x, y).statistic)  # variant="b" is scipy's default


def kendall(m_icl: Tensor, m_ft: Tensor) -> LayerAverage:
    """τ-b(m_ICL[n, l], m_FT[n, l]) for every example and layer; mean over examples, then layers.

    Inputs [N, L, J]. τ is undefined when a vector is constant: such cases give 0 and are counted in
    ``zero_per_layer`` (as zero vectors are for the cosines).
    """
    check_shapes("[N, L, J]", m_icl=m_icl, m_ft=m_ft)
    check_finite(m_icl=m_icl, m_ft=m_ft)  # scipy's τ of a NaN is NaN, which would be counted as a constant vector
    x, y = m_icl.double().cpu().numpy(), m_ft.double().cpu().numpy()
    n_examples, n_layers, _ = x.shape
    taus = np.array([[_tau_b(x[n, l], y[n, l]) for l in range(n_layers)] for n in range(n_examples)])
    undefined = torch.from_numpy(np.isnan(taus))
    values = torch.from_numpy(np.nan_to_num(taus, nan=0.0))
    return layer_average(values, undefined)


def kendall_random(m_icl: Tensor, u: Tensor) -> LayerAverage:
    """Random baseline: τ-b(m_ICL[n, l], u[n, l]), u ~ Uniform[0,1)^J per (n, l), of m_ICL's shape [N, L, J]
    (draw it per example with :func:`iclgd.metrics.draws.uniform_per_example`)."""
    return kendall(m_icl, u)
