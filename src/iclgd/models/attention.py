"""The one attention function iclgd runs inside every supported model, with a shared demonstration prefix.

transformers 5.x calls attention through ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` with q and k
already rotated (GPT-2, OPT, GPT-NeoX, LLaMA, Mistral, Qwen2, Phi-3, Gemma 2, and Gemma 3 after its q/k norms);
GPT-Neo, GPT-J and XGLM compute attention inline and reach :func:`attend` through the replacement forwards in
:mod:`iclgd.models.own_attention`. Registering ``"iclgd"`` here does two things:

* ``AttentionInterface.register("iclgd", iclgd_attention)``: the function below;
* ``AttentionMaskInterface.register("iclgd", sdpa_mask)``: a boolean mask (True = attend) of shape
  ``[B, 1, T_q, T_k]``, or None for a plain causal mask. Without a registered mask function transformers hands a
  custom implementation ``attention_mask=None`` and the causal and padding masks vanish silently.

A forward pass sees at most one :class:`Session`, set by :mod:`iclgd.models.capture` in its model's
:class:`SessionSlot`. A session can

* hold a shared :class:`~iclgd.models.capture.Prefix`: per layer K/V ``[1, H_kv, P, D]`` that every row of the
  batch attends to, scored apart from the query block and merged by log-sum-exp (never expanded per example):
      s_pre = q K_pre^T · scaling            (one batched matmul, batch and GQA groups folded into rows)
      s_blk = q K_blk^T · scaling + mask
      m = max(max s_pre, max s_blk);  out = (e^{s_pre−m} V_pre + e^{s_blk−m} V_blk) / (Σ e^{s_pre−m} + Σ e^{s_blk−m})
  A pass that needs no gradient (fp32, CPU, no soft cap, no window into the prefix) runs the prefix block in
  PyTorch's fused CPU kernel instead and merges its log-sum-exp the same way (:func:`_attend_with_prefix_fused`).

  With a soft cap (Gemma 2 passes ``softcap=``) every score becomes ``cap·tanh(s/cap)`` before the mask, in both
  blocks and in the plain path, as transformers' eager attention does. Query positions continue after the prefix
  (position ids ``P + t``); a layer with a window W lets query position p see key position j iff
  ``p − W < j ≤ p`` (transformers' ``sliding_window_overlay``, GPT-Neo's local layers);
* collect the K/V of a prefix being encoded;
* record captures (a :class:`~iclgd.models.capture.CaptureBuffer`), from the same q and k the model uses.

Without a session the function is plain scaled-dot-product attention (``torch.nn.functional.scaled_dot_product_
attention``; written out when there is a soft cap, which sdpa cannot apply), so a prepared model behaves like the
stock one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from iclgd.metrics.cosine import running_sum  # a sum in index order: trailing (masked) zeros change no bit

IMPLEMENTATION = "iclgd"


@dataclass
class Session:
    """What one forward pass of one model should do beyond attention (see the module docstring)."""

    prefix: Any = None  # iclgd.models.capture.Prefix
    encoding: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # layer -> (K, V) of a prefix being encoded
    buffer: Any = None  # iclgd.models.capture.CaptureBuffer
    cache: dict = field(default_factory=dict)  # masks shared by the layers of one pass


class SessionSlot:
    """Where one model's attention modules find the session of the current forward pass. :func:`iclgd.models.
    loading.prepare` gives each model one slot and every attention module of the model a reference to it;
    :mod:`iclgd.models.capture` sets ``session`` around a pass. No global state: two models never meet."""

    def __init__(self) -> None:
        self.session: Session | None = None


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap·tanh(x / cap), Gemma 2's soft-capping of scores and logits (identity for ``cap=None``), as transformers
    computes it."""
    return x if cap is None else torch.tanh(x / cap) * cap


def session_for(module: nn.Module) -> Session | None:
    slot = getattr(module, "_iclgd_slot", None)
    return None if slot is None else slot.session


def block_mask(
    attention_mask: torch.Tensor | None, q_len: int, k_len: int, window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean mask ``[B|1, 1, T_q, T_k]`` (True = attend) over the keys passed to the layer, or None for plain causal.

    The queries are the last ``T_q`` of the ``T_k`` keys. The model's own mask (causal, padding, and for Mistral and
    Qwen2 their window) is kept; the causal rule and the window are applied again, which changes nothing where the
    model already applied them and adds GPT-Neo's local window, which its mask does not carry.
    """
    if attention_mask is not None and attention_mask.dtype != torch.bool:  # an additive (eager-style) mask
        attention_mask = attention_mask > torch.finfo(attention_mask.dtype).min / 2
    if attention_mask is None and window is None and q_len == k_len:
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (k_pos > q_pos - window)
    allowed = allowed[None, None]
    return allowed if attention_mask is None else attention_mask & allowed


def prefix_window_mask(q_len: int, prefix_len: int, window: int | None, device: torch.device) -> torch.Tensor | None:
    """Boolean ``[T_q, P]``, True where query ``P + t`` may see prefix key ``j`` (``j > P + t − W``); None if all."""
    if window is None or prefix_len + q_len - 1 - window < 0:
        return None
    q_pos = torch.arange(prefix_len, prefix_len + q_len, device=device)[:, None]
    k_pos = torch.arange(prefix_len, device=device)[None, :]
    return k_pos > q_pos - window


def _causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[1, 1, T_q, T_k]``, True where a query (the last ``T_q`` of the ``T_k`` keys) may see a key."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)[None, None]


def _query_block_scores(q_groups: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float,
                        softcap: float | None) -> torch.Tensor:
    """The query block's scores over its own keys, ``[B, H_kv, g, T, T_k]`` in fp32: soft-capped, masked to −inf.

    q_groups ``[B, H_kv, g, T, D]`` (the GQA group of each key head together); key ``[B, H_kv, T_k, D]``; mask
    ``[B|1, 1, T, T_k]`` or None for plain causal."""
    batch, n_kv, group, q_len, head_dim = q_groups.shape
    k_len = key.shape[2]
    k_flat = key.reshape(batch * n_kv, k_len, head_dim).transpose(-1, -2)
    s_blk = torch.baddbmm(q_groups.new_empty(batch * n_kv, group * q_len, k_len),
                          q_groups.reshape(batch * n_kv, group * q_len, head_dim), k_flat, beta=0.0, alpha=scaling)
    s_blk = soft_cap(s_blk.float().view(batch, n_kv, group, q_len, k_len), softcap)
    if mask is None:
        mask = _causal_mask(q_len, k_len, q_groups.device)
    return s_blk.masked_fill(~mask[:, :, None], float("-inf"))


# MKL_CBWR=AUTO,STRICT (read by MKL at its first product) keeps a row's bits whatever else is multiplied with it;
# with it, the passes also take the written-out attention, and every value is the same bits whatever the batch size.
MKL_MODE = os.environ.get("MKL_CBWR", "default")
BATCH_EXACT = MKL_MODE.upper().endswith("STRICT")
# Strict mode keeps a row's bits only in products of enough rows on some CPUs: on an AVX-512 EPYC, 1 to 3 rows (and
# up to 15 where the product has 16 columns) take other kernels. Strict-mode passes give every product of the query
# block and the unembedding at least this many rows (iclgd.models.capture.forward pads with masked positions).
EXACT_MIN_ROWS = 16


def _attend_with_prefix(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    scaling: float,
    prefix_allowed: torch.Tensor | None,
    dropout: float,
    training: bool,
    workspace: torch.Tensor | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Softmax attention over [prefix block | query block], merged by log-sum-exp. Returns ``[B, T, H, D]``.

    query ``[B, H, T, D]``; key/value ``[B, H_kv, T, D]``; prefix_key/value ``[1, H_kv, P, D]`` shared by the batch.
    The prefix scores are one batched matmul per key head with the batch, the query positions and the GQA group
    folded into its rows, ``[H_kv, g·B·T, D] @ [H_kv, D, P]``, kept in that layout (row statistics contiguous);
    no copy of the prefix is made. Without gradients the big score tensor is updated in place.
    """
    batch, n_heads, q_len, head_dim = query.shape
    n_kv, k_len = key.shape[1], key.shape[2]
    group = n_heads // n_kv
    prefix_len = prefix_key.shape[2]
    rows = group * batch * q_len
    inplace = not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))
    neg_inf = float("-inf")

    q_groups = query.view(batch, n_kv, group, q_len, head_dim)
    q_rows = q_groups.permute(1, 2, 0, 3, 4).reshape(n_kv, rows, head_dim)
    if inplace and workspace is not None and workspace.dtype == query.dtype:
        # A preallocated buffer: allocating a fresh [H_kv, g·B·T, P] tensor per layer costs more than the matmul.
        s_pre = torch.baddbmm(workspace, q_rows, prefix_key[0].transpose(-1, -2), beta=0.0, alpha=scaling,
                              out=workspace)
    else:
        s_pre = torch.baddbmm(query.new_empty(n_kv, rows, prefix_len), q_rows, prefix_key[0].transpose(-1, -2),
                              beta=0.0, alpha=scaling)
    s_pre = s_pre.float().view(n_kv, group, batch, q_len, prefix_len)
    if softcap is not None:
        s_pre = s_pre.div_(softcap).tanh_().mul_(softcap) if inplace else soft_cap(s_pre, softcap)
    if prefix_allowed is not None:
        s_pre = s_pre.masked_fill_(~prefix_allowed, neg_inf) if inplace else s_pre.masked_fill(~prefix_allowed, neg_inf)
    s_blk = _query_block_scores(q_groups, key, mask, scaling, softcap)

    # Row statistics in the prefix layout [H_kv, g, B, T]; fully masked (padding) rows give 0, not NaN.
    row_max = torch.maximum(s_pre.amax(-1), s_blk.amax(-1).permute(1, 2, 0, 3))
    row_max = row_max.clamp_min(torch.finfo(torch.float32).min)
    e_pre = s_pre.sub_(row_max[..., None]).exp_() if inplace else (s_pre - row_max[..., None]).exp()
    e_blk = (s_blk - row_max.permute(2, 0, 1, 3)[..., None]).exp()
    norm = e_pre.sum(-1) + running_sum(e_blk).permute(1, 2, 0, 3)
    if dropout > 0.0 and training:
        e_pre = F.dropout(e_pre, dropout, training=True)
        e_blk = F.dropout(e_blk, dropout, training=True)
    dtype = value.dtype
    o_pre = torch.bmm(e_pre.to(dtype).view(n_kv, rows, prefix_len), prefix_value[0])
    o_blk = torch.bmm(e_blk.to(dtype).view(batch * n_kv, group * q_len, k_len), value.reshape(batch * n_kv, k_len, -1))
    o_blk = o_blk.view(batch, n_kv, group, q_len, head_dim).permute(1, 2, 0, 3, 4)
    out = (o_pre.view(n_kv, group, batch, q_len, head_dim) + o_blk) / norm.clamp_min(1e-30)[..., None].to(dtype)
    return out.permute(2, 3, 0, 1, 4).reshape(batch, q_len, n_heads, head_dim)


# PyTorch's fused CPU attention that also returns each row's log-sum-exp (what merging two key blocks needs);
# a private op, so looked up once and the explicit path kept for when it is missing.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def fused_prefix_applies(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         prefix_allowed: torch.Tensor | None, softcap: float | None, dropout: float) -> bool:
    """Whether :func:`_attend_with_prefix_fused` may run: an fp32 CPU pass that needs no gradient, with every
    prefix key visible to every query (no window reaching into the prefix), no soft cap and no dropout."""
    return (
        _CPU_FLASH is not None
        and query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.float32
        and not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))
        and prefix_allowed is None
        and softcap is None
        and dropout == 0.0
    )


def _attend_with_prefix_fused(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """:func:`_attend_with_prefix` for a pass without gradients: the same merge by log-sum-exp, with the prefix block
    run by PyTorch's fused CPU kernel. Returns ``[B, T, H, D]``.

    The prefix scores ``[H_kv, g·B·T, P]`` are the largest tensor of a scoring pass; written out they are stored and
    reread four times, the kernel keeps them in cache (2x faster on the prefix block at P = 472). It gives the
    prefix block's normalised output o_pre and its log-sum-exp L; with the query block's row max m_b, sum s_b and
    unnormalised output o_b:  out = (e^{L−m} o_pre + e^{m_b−m} o_b) / (e^{L−m} + e^{m_b−m} s_b),  m = max(L, m_b).
    """
    batch, n_heads, q_len, head_dim = query.shape
    n_kv, k_len = key.shape[1], key.shape[2]
    group = n_heads // n_kv
    q_groups = query.view(batch, n_kv, group, q_len, head_dim)
    q_rows = q_groups.permute(1, 2, 0, 3, 4).reshape(1, n_kv, group * batch * q_len, head_dim)
    o_pre, lse_pre = _CPU_FLASH(q_rows, prefix_key, prefix_value, 0.0, False, attn_mask=None, scale=scaling)[:2]
    o_pre = o_pre.view(n_kv, group, batch, q_len, head_dim).permute(2, 0, 1, 3, 4)  # [B, H_kv, g, T, D]
    lse_pre = lse_pre.view(n_kv, group, batch, q_len).permute(2, 0, 1, 3)

    s_blk = _query_block_scores(q_groups, key, mask, scaling, None)
    # A fully masked (padding) row has m_b = the smallest float: e^{m_b−m} = 0 and the prefix alone answers.
    max_blk = s_blk.amax(-1).clamp_min(torch.finfo(torch.float32).min)
    e_blk = s_blk.sub_(max_blk[..., None]).exp_()
    o_blk = torch.bmm(e_blk.view(batch * n_kv, group * q_len, k_len), value.reshape(batch * n_kv, k_len, -1))
    row_max = torch.maximum(lse_pre, max_blk)
    w_pre, w_blk = (lse_pre - row_max).exp(), (max_blk - row_max).exp()
    norm = w_pre + running_sum(e_blk) * w_blk
    out = (o_pre * w_pre[..., None] + o_blk.view(batch, n_kv, group, q_len, head_dim) * w_blk[..., None])
    out = out / norm[..., None]
    return out.permute(0, 3, 1, 2, 4).reshape(batch, q_len, n_heads, head_dim)


def _plain_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
    dropout: float,
) -> torch.Tensor:
    """Softmax attention without a prefix, ``[B, T, H, D]``: sdpa, or written out where the scores are soft-capped
    and, in MKL's strict mode (:data:`BATCH_EXACT`), for passes without gradients: sdpa's normaliser sums a row's
    weights grouped by the batch's padded length, so a padded example's bits depend on its batch; written out,
    every sum over keys runs in index order and trailing masked keys add exact zeros. Written out costs 1.3x (30
    tokens) to 1.7x (300) sdpa's time on SmolLM2, so the default mode keeps sdpa."""
    training = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)
    if softcap is None and (training or not BATCH_EXACT or query.device.type != "cpu"):
        return F.scaled_dot_product_attention(
            query, key, value.to(query.dtype), attn_mask=mask, dropout_p=dropout, is_causal=mask is None,
            scale=scaling, enable_gqa=query.shape[1] != key.shape[1],
        ).to(value.dtype).transpose(1, 2)
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    q_len, k_len = query.shape[2], key.shape[2]
    scores = soft_cap((query @ key.transpose(-1, -2) * scaling).float(), softcap)
    if mask is None:
        mask = _causal_mask(q_len, k_len, query.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    # Fully masked (padding) rows give 0, not NaN, as in the prefix path.
    row_max = scores.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).min).detach()
    weights = (scores - row_max).exp()
    weights = weights / running_sum(weights)[..., None].clamp_min(1e-30)
    weights = F.dropout(weights, dropout, training=dropout > 0.0)
    return (weights.to(value.dtype) @ value).transpose(1, 2)


def attend(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float,
    window: int | None,
    dropout: float = 0.0,
    scores_in_float32: bool = False,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention of ``query [B, H, T_q, D]`` over ``key/value [B, H_kv, T_k, D]`` (rotated, the model's own scaling
    and soft cap), plus the active session's prefix, encoding and captures. Returns ``[B, T_q, H, D]``."""
    session = session_for(module)
    layer = getattr(module, "_iclgd_layer", None)
    q_len, k_len = query.shape[2], key.shape[2]
    if session is not None and session.encoding is not None:
        session.encoding[layer] = (key.detach(), value.detach())
    if scores_in_float32:  # GPT-Neo and GPT-J compute their scores in fp32
        query, key = query.float(), key.float()
    mask = block_mask(attention_mask, q_len, k_len, window, query.device)
    prefix = session.prefix if session is not None else None

    if prefix is None:
        out = _plain_attention(query, key, value, mask, scaling, softcap, dropout if module.training else 0.0)
        prefix_key = None
    else:
        if q_len != k_len:
            raise ValueError("a shared prefix cannot be combined with a KV cache")
        prefix_key, prefix_value = prefix.keys[layer], prefix.values[layer]
        cache_key = ("prefix_window", q_len, window)
        if cache_key not in session.cache:
            session.cache[cache_key] = prefix_window_mask(q_len, prefix.length, window, query.device)
        prefix_allowed = session.cache[cache_key]
        if fused_prefix_applies(query, key, value, prefix_allowed, softcap, dropout if module.training else 0.0):
            out = _attend_with_prefix_fused(query, key, value, mask, prefix_key.to(query.dtype),
                                            prefix_value.to(query.dtype), scaling)
        else:
            n_rows = query.shape[0] * query.shape[1] * q_len // key.shape[1]
            workspace = prefix.workspace((key.shape[1], n_rows, prefix.length), query.dtype, query.device)
            out = _attend_with_prefix(
                query, key, value, mask, prefix_key.to(query.dtype), prefix_value, scaling,
                prefix_allowed, dropout, module.training, workspace, softcap,
            )
    if session is not None and session.buffer is not None:
        session.buffer.on_attention(layer, query, key, mask, scaling, prefix_key, softcap)
    return out


def iclgd_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The function registered as ``attn_implementation="iclgd"`` (transformers' attention-interface signature).

    ``softcap`` (Gemma 2's attn_logit_softcapping) is applied exactly: scores ``cap·tanh(s/cap)`` before the mask."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    window = sliding_window if sliding_window is not None else getattr(module, "_iclgd_window", None)
    return attend(module, query, key, value, attention_mask, scaling=scaling, window=window, dropout=dropout,
                  softcap=softcap), None


AttentionInterface.register(IMPLEMENTATION, iclgd_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
