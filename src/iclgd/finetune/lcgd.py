"""Layer-causal GD (Deutch et al. 2024, their released code): each layer learns only from its own readout.

    block l receives a DETACHED copy of its input         (no gradient flows to the layers below)
    logits_l = unembed(output of block l)                  (frozen: final norm, OPT's project_out, unembedding,
                                                            Gemma 2's final soft cap; iclgd.models.families)
    loss = Σ_l mean_t −log p_l(x_t | x_<t), t = 1..T−1     (full vocabulary, every token but the first)

One SGD step per demo on the K/V parameters, same learning rate as GD (see :mod:`iclgd.finetune.gd`). Each
layer's gradient then depends only on the layers at or below it.

The paper's text describes another variant (method ``lcgd-paper``, :data:`PAPER_LOSS`): the attention module's
output (before the residual add) is read out instead of the block's, and the demos are learned one token at a
time: one SGD step per demo token t, on Σ_l −log p_l(x_t | x_<t) (:func:`token_steps` makes the prefixes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from iclgd.errors import UserError
from iclgd.finetune.gd import FinetuneResult, Model, next_token_nll, train
from iclgd.models.families import blocks, family_of, get_module, unembed

Readout = Literal["block", "attention"]


def _detach_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: the block sees its hidden states detached from the graph below it."""
    if args:
        return (args[0].detach(), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}


def _keep_output(outputs: dict[int, Tensor], layer: int, module: nn.Module, args: tuple, output) -> None:
    outputs[layer] = output[0] if isinstance(output, tuple) else output


def layer_causal_loss(
    model: nn.Module,
    input_ids: Tensor,
    n_label: int = 0,
    *,
    detach: bool = True,
    layers: Sequence[int] | None = None,
    readout: Readout = "block",
    last_token_only: bool = False,
) -> Tensor:
    """Σ_{l ∈ layers} next-token NLL of unembed(h_l), h_l read out at layer l (the model's own readout); every token
    but the first is a target (``n_label`` is ignored: Deutch et al.'s loss covers the whole demo), or with
    ``last_token_only`` the last token alone (the paper's one step per token, on its prefix).

    ``detach``: each block gets a detached copy of its input. ``layers``: whose terms to sum (None: all).
    Without detaching and with the last layer's term only, this is GD's loss with GD's gradient.
    """
    if readout not in ("block", "attention"):
        raise UserError(f"LCGD readout must be 'block' or 'attention', got {readout!r}")
    family = family_of(model)
    block_list = blocks(model, family)
    outputs: dict[int, Tensor] = {}
    handles = []
    try:
        for layer, block in enumerate(block_list):
            if detach:
                handles.append(block.register_forward_pre_hook(_detach_input, with_kwargs=True))
            source = block if readout == "block" else get_module(block, family.attention)
            handles.append(source.register_forward_hook(functools.partial(_keep_output, outputs, layer)))
        model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    chosen = range(len(block_list)) if layers is None else layers
    if last_token_only:
        outputs = {layer: hidden[:, -2:] for layer, hidden in outputs.items()}  # predicts the last token
        input_ids = input_ids[:, -2:]
    losses = [next_token_nll(unembed(model, family, outputs[layer]), input_ids) for layer in chosen]
    return torch.stack(losses).sum()


PAPER_LOSS = functools.partial(layer_causal_loss, readout="attention", last_token_only=True)


def token_steps(sequences: Sequence[Tensor | Sequence[int]]) -> list[Tensor]:
    """Each sequence's prefixes x_≤t, t = 1..T−1, in order: one training step per token after the first, on the
    last token of its prefix (:data:`PAPER_LOSS`)."""
    steps = []
    for sequence in sequences:
        ids = torch.as_tensor(sequence, dtype=torch.long).flatten()
        steps += [ids[: t + 1] for t in range(1, len(ids))]
    return steps


def finetune_lcgd(
    lm: Model,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    detach: bool = True,
    layers: Sequence[int] | None = None,
    readout: Readout = "block",
    record_queries: bool = False,
    bos_length: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> FinetuneResult:
    """LCGD: batch 1, one epoch, one SGD step per demo on the K/V parameters with the layer-causal loss."""
    loss_fn = functools.partial(layer_causal_loss, detach=detach, layers=layers, readout=readout)
    return train(lm, demo_sequences, lr, loss_fn=loss_fn, record_queries=record_queries, bos_length=bos_length,
                 on_step=on_step)
