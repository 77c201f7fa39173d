"""fairseq's random initialisation of a decoder LM, the one Deutch et al.'s untrained baselines were drawn from (their
models were fairseq dense LMs, built by fairseq and never loaded), for any family of the table:

    W_Q, W_K, W_V     xavier_uniform, gain 1/√2 (fairseq MultiheadAttention.reset_parameters, qkv_same_dim);
                      each cut of a fused q/k/v projection with its own fan-in and fan-out
    their biases      PyTorch's nn.Linear default, U(±1/√fan_in): not zero
    W_O               xavier_uniform, gain 1; its bias 0
    other Linear      PyTorch's nn.Linear default (kaiming_uniform, a = √5; bias U(±1/√fan_in))
    embeddings        N(0, d^-1/2), the padding row 0 (fairseq's Embedding), also an untied unembedding
    norms             ones and zeros: the family's own identity initialisation, left as it is

against each family's own ``_init_weights`` (mostly N(0, 0.02), zero biases), which iclgd's other untrained variants
use. Call under a seeded torch RNG: the same seed gives the same weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iclgd.models.families import Family, attention_modules, get_module, projection_parameters

QKV_GAIN = 1 / math.sqrt(2)


def _linear_default(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """nn.Linear.reset_parameters on an (out, in) ``weight``."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound)


def _xavier(rows: int, columns: int, gain: float) -> torch.Tensor:
    """An (out=rows, in=columns) xavier_uniform draw."""
    weight = torch.empty(rows, columns)
    return nn.init.xavier_uniform_(weight, gain=gain)


@torch.no_grad()
def fairseq_init(model: nn.Module, family: Family) -> None:
    """Re-initialise ``model`` (fp32, on the CPU) in place as fairseq would have built it; see the module docstring."""
    from transformers.pytorch_utils import Conv1D

    for module in model.modules():
        if isinstance(module, nn.Linear):
            _linear_default(module.weight, module.bias, module.in_features)
        elif isinstance(module, Conv1D):  # GPT-2's (in, out) layout: draw as (out, in) and transpose
            weight = torch.empty(module.weight.shape[1], module.weight.shape[0])
            _linear_default(weight, module.bias, module.weight.shape[0])
            module.weight.copy_(weight.T)
    for module in model.modules():  # after the Linears: a tied unembedding (an nn.Linear) is the embedding
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=module.embedding_dim ** -0.5)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
    unembedding = model.get_output_embeddings()
    if unembedding.weight is not model.get_input_embeddings().weight:  # untied: fairseq's output projection
        nn.init.normal_(unembedding.weight, mean=0.0, std=unembedding.weight.shape[1] ** -0.5)
    fused_transposed = family.fused_layout == "columns"  # GPT-2's c_attn is a Conv1D
    for layer, attention in enumerate(attention_modules(model, family)):
        for kind in ("q", "k", "v"):
            for piece in projection_parameters(model, family, (kind,), [layer]):
                if piece.parameter.dim() == 2:  # biases keep nn.Linear's non-zero default
                    _xavier_in_place(piece.parameter, piece.mask, fused_transposed, QKV_GAIN)
        output = get_module(attention, family.o_proj)
        _xavier_in_place(output.weight, None, isinstance(output, Conv1D), 1.0)
        if output.bias is not None:
            output.bias.zero_()


def _xavier_in_place(weight: torch.Tensor, mask: torch.Tensor | None, transposed: bool, gain: float) -> None:
    """xavier_uniform over ``weight`` or over its ``mask``ed cut (one projection of a fused q/k/v weight), counting
    the fans of that cut as a Linear (out, in) matrix; ``transposed``: stored as (in, out), as GPT-2's Conv1D."""
    if mask is None:
        rows, cols = (weight.shape[1], weight.shape[0]) if transposed else tuple(weight.shape)
        draw = _xavier(rows, cols, gain)
        weight.copy_(draw.T if transposed else draw)
    elif transposed:  # (in, 3d): the kind's columns
        selected = mask[0]
        weight[:, selected] = _xavier(int(selected.sum()), weight.shape[0], gain).T
    else:  # (3d or H·D + 2·H_kv·D, in): the kind's rows
        selected = mask[:, 0]
        weight[selected] = _xavier(int(selected.sum()), weight.shape[1], gain)
