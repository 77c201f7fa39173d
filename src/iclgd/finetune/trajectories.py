"""Dai's GD (K/V, batch 1, one epoch, SGD) at several learning rates in one batched pass: the lr search's trainer.

Trajectory b runs as batch row b of one forward: each trained projection's output gets ``x_b @ Δ_bᵀ (+ δ_b)``
added by a forward hook, where Δ_b is trajectory b's change of the weight so far (fp32; the model's own weights
are never touched). The loss is the sum of the rows' next-token losses, so the gradient of Δ_b is trajectory b's
own gradient, and each trajectory steps Δ_b ← Δ_b − η_b g_b. In exact arithmetic this is :func:`finetune_gd` at
each η_b; in floats it agrees to rounding (the sum ``x W + x Δ`` is associated differently), except where the
training is chaotic in η (:mod:`iclgd.finetune.lr_search`), where rounding alone sends the two apart. The halving
search ranks learning rates with it; the unit then trains the chosen one with :func:`finetune_gd`.

Batching trajectories pays on a CPU too: a 135M model's forward + backward of a 20-token demo costs 240 ms alone
and 88 ms per row in a batch of 12 (2 cores).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from iclgd.finetune.gd import Model, _as_input_ids, as_module, only_trainable, trainable_slices
from iclgd.models.families import TrainableSlice


def _owners(model: nn.Module, slices: Sequence[TrainableSlice]) -> list[tuple[nn.Module, str]]:
    """(module, "weight" | "bias") holding each slice's parameter."""
    where = {}
    for module in model.modules():
        for kind in ("weight", "bias"):
            p = getattr(module, kind, None)
            if isinstance(p, nn.Parameter):
                where[id(p)] = (module, kind)
    return [where[id(s.parameter)] for s in slices]


def supports_batched_trajectories(lm: Model) -> bool:
    """True when every K/V parameter sits in an ``nn.Linear`` or a GPT-2 ``Conv1D`` (the hook's two layouts)."""
    model = as_module(lm)
    return all(isinstance(module, (nn.Linear, Conv1D)) for module, _ in _owners(model, trainable_slices(model)))


@contextlib.contextmanager
def _deltas_added(model: nn.Module, slices: Sequence[TrainableSlice], deltas: dict[str, Tensor]) -> Iterator[None]:
    """Inside: row b of every forward gets trajectory b's weight and bias changes ``deltas[name][b]`` added."""
    by_module: dict[nn.Module, dict[str, Tensor]] = {}
    for s, (module, kind) in zip(slices, _owners(model, slices), strict=True):
        by_module.setdefault(module, {})[kind] = deltas[s.name]

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        x = inputs[0].float()  # [B, T, in]
        change = by_module[module]
        extra = torch.zeros((), device=output.device)
        if "weight" in change:  # Linear: weight [out, in]; Conv1D: weight [in, out]
            layout = "bti,boi->bto" if isinstance(module, nn.Linear) else "bti,bio->bto"
            extra = torch.einsum(layout, x, change["weight"])
        if "bias" in change:
            extra = extra + change["bias"][:, None, :]
        return output + extra.to(output.dtype)

    handles = [module.register_forward_hook(hook) for module in by_module]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def gd_trajectories(lm: Model, sequences: Sequence[Tensor | Sequence[int]], lrs: Sequence[float], *,
                    max_bytes: int = 2**31) -> list[dict[str, Tensor]]:
    """The K/V tensors Dai's GD (:func:`finetune_gd`) ends with at each learning rate of ``lrs``, trained as
    batches of trajectories (as many per batch as keep their changes and gradients under ``max_bytes``):
    name -> fp32 tensor per lr, in the order of ``lrs``. The model is left unchanged."""
    model = as_module(lm)
    slices = trainable_slices(model)
    per_trajectory = 3 * 4 * sum(s.parameter.numel() for s in slices)  # fp32 change, its gradient, the step
    chunk = max(1, max_bytes // per_trajectory)
    return [tensors for start in range(0, len(lrs), chunk)
            for tensors in _trajectories(model, slices, sequences, lrs[start:start + chunk])]


def _trajectories(model: nn.Module, slices: Sequence[TrainableSlice], sequences: Sequence[Tensor | Sequence[int]],
                  lrs: Sequence[float]) -> list[dict[str, Tensor]]:
    device = slices[0].parameter.device
    rates = torch.tensor([float(lr) for lr in lrs], device=device)
    n = len(rates)
    deltas = {s.name: torch.zeros((n, *s.parameter.shape), device=device, requires_grad=True) for s in slices}
    with only_trainable(model, []), _deltas_added(model, slices, deltas):
        for sequence in sequences:
            ids = _as_input_ids(sequence, device).expand(n, -1)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
            per_token.view(n, -1).mean(dim=1).sum().backward()  # row b's gradient is trajectory b's own
            with torch.no_grad():
                for s in slices:
                    grad = deltas[s.name].grad
                    if s.mask is not None:
                        grad = grad * s.mask  # the Q slice of a fused projection stays untouched
                    deltas[s.name] -= rates.view(-1, *[1] * s.parameter.dim()) * grad
                    deltas[s.name].grad = None
    return [{s.name: s.parameter.detach().float() + deltas[s.name][b].detach() for s in slices} for b in range(n)]
