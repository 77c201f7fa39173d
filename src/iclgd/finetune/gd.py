"""Finetuning on the demonstrations (Dai et al.'s FT baseline): SGD on the attention K/V projections.

    for each demo, in the ICL order:                       (batch 1, one epoch, one step per demo)
        loss = mean_t −log p(x_t | x_<t), t = 1..T−1        ([BOS] input label: every token but the first)
        g = ∇ loss w.r.t. the K/V parameters (Q slice of a fused projection masked out)
        W ← W − η g                                         (plain SGD: no momentum, decay, clipping)

Everything but the K/V parameters has requires_grad=False during training, so backward never computes
their gradients; dropout is off (eval mode). The trained tensors are kept in fp32 whatever the model's
dtype (bf16 swallows updates of lr ~1e-4) and copied into the model after each step.

No deep copies of the model: :func:`snapshot` keeps the original K/V tensors, the model is restored to
them after training, and :func:`swap_in` / :func:`restore` load trained or original tensors in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iclgd.errors import UserError
from iclgd.models.capture import CaptureRequest, recording
from iclgd.models.families import TrainableSlice, blocks, family_of, kv_parameters
from iclgd.models.loading import LoadedModel, loaded

LossFn = Callable[[nn.Module, Tensor], Tensor]  # (model, input_ids [1, T]) -> scalar loss
Model = LoadedModel | nn.Module


@dataclass
class FinetuneResult:
    """What one finetuning run produced.

    tensors:       the trained tensors, name -> fp32 tensor (load with :func:`swap_in`)
    grad_norms:    [steps, layers] L2 norm of each layer's trained-parameter gradient before each step,
                   unscaled (Deutch et al. Fig. 4)
    losses:        the loss of each step, before its update
    train_queries: [layers, tokens, width] the scaled queries of every demo token (the BOS tokens of each
                   sequence, if any, dropped), each recorded in the forward pass of the step that saw it
                   (Kendall), or None
    train_tokens:  [tokens] the token ids of those queries, or None
    """

    tensors: dict[str, Tensor]
    grad_norms: Tensor
    losses: list[float]
    train_queries: Tensor | None = None
    train_tokens: Tensor | None = None


# ---- the trainable tensors: which, snapshot, swap ----

def _module(lm: Model) -> nn.Module:
    return lm.model if isinstance(lm, LoadedModel) else lm


def trainable_slices(lm: Model) -> list[TrainableSlice]:
    """The attention K and V projections (weights and biases) of every layer, with fused-Q masks."""
    model = _module(lm)
    return kv_parameters(model, family_of(model))


def snapshot(slices: Sequence[TrainableSlice] | Model) -> dict[str, Tensor]:
    """Copies of the trainable tensors (name -> tensor, the model's dtype): what :func:`restore` puts back."""
    if isinstance(slices, (nn.Module, LoadedModel)):
        slices = trainable_slices(slices)
    return {s.name: s.parameter.detach().clone() for s in slices}


@torch.no_grad()
def swap_in(lm: Model, tensors: dict[str, Tensor]) -> None:
    """Load ``tensors`` (name -> tensor) into the model's parameters in place (``param.data.copy_``)."""
    params = dict(_module(lm).named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise KeyError(f"the model has no parameter(s) {missing[:3]}: these tensors belong to another model")
    for name, tensor in tensors.items():
        params[name].data.copy_(tensor)


def restore(lm: Model, original: dict[str, Tensor]) -> None:
    """Put back the tensors of a :func:`snapshot`, bit-exactly."""
    swap_in(lm, original)


def layer_of(model: nn.Module, slices: Sequence[TrainableSlice]) -> list[int]:
    """The block index of each slice."""
    index = {id(p): layer for layer, block in enumerate(blocks(model, family_of(model))) for p in block.parameters()}
    return [index[id(s.parameter)] for s in slices]


@contextlib.contextmanager
def only_trainable(model: nn.Module, slices: Sequence[TrainableSlice]) -> Iterator[None]:
    """Inside: eval mode (no dropout), requires_grad only on the slices' parameters, no stale grads.

    Restores the training flag and every parameter's requires_grad on exit.
    """
    was_training = model.training
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    trainable = {id(s.parameter) for s in slices}
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
            p.grad = None
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
        model.train(was_training)


# ---- losses ----

def next_token_nll(logits: Tensor, input_ids: Tensor) -> Tensor:
    """mean_{t=1..T−1} −log p(x_t | x_<t): logits [1, T, V], input_ids [1, T]; position 0 has no context to be
    predicted from (it is BOS, or the first demo token of a model without BOS)."""
    return F.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])


def lm_loss(model: nn.Module, input_ids: Tensor) -> Tensor:
    """GD's loss: the model's mean next-token NLL over every token but the first (after BOS, where there is one)."""
    return next_token_nll(model(input_ids=input_ids, use_cache=False).logits, input_ids)


# ---- the training loop ----

def _as_input_ids(sequence: Tensor | Sequence[int], device: torch.device) -> Tensor:
    ids = torch.as_tensor(sequence, dtype=torch.long).flatten().to(device)
    if ids.numel() < 2:
        raise UserError(f"a training sequence has {ids.numel()} token(s); it needs BOS and at least one more")
    return ids[None]


def _forward_recording_queries(lm: LoadedModel, loss_fn: LossFn, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, scaled queries [L, T, width] of every position) of one forward pass, gradients unchanged."""
    last = torch.tensor([input_ids.shape[1] - 1])
    request = CaptureRequest(analysis_index=last, test_start=last, all_queries=True)
    with recording(lm, request) as buffer:
        loss = loss_fn(lm.model, input_ids)
    return loss, buffer.capture.all_queries[0]


def sgd(
    lm: Model,
    steps: Sequence[Sequence[Tensor | Sequence[int]]],
    lr: float,
    loss_fn: LossFn = lm_loss,
    *,
    record_queries: bool = False,
    bos_length: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> FinetuneResult:
    """Plain SGD on the K/V parameters, one step per entry of ``steps`` (a list of sequences).

    Step loss = mean over its sequences of ``loss_fn`` (batch 1: one sequence per step); each step sees
    the weights left by the previous one. The model is left with its original weights.
    ``record_queries``: keep every token's scaled query per layer, recorded through
    :func:`iclgd.models.capture.recording`, except the first ``bos_length`` positions of each sequence (its
    BOS, which is not a demo token; 0 for a model without BOS). Recording queries needs ``bos_length``: no default
    guesses it.
    """
    if not lr > 0:
        raise UserError(f"learning rate must be positive, got {lr}: set `lr` in the config")
    if record_queries and bos_length is None:
        raise ValueError("recording queries needs bos_length: how many BOS tokens start each sequence (0 for none)")
    model = _module(lm)
    if record_queries and not isinstance(lm, LoadedModel):
        lm = loaded(model, None, name=type(model).__name__)
    slices = trainable_slices(model)
    original = snapshot(slices)
    layers = layer_of(model, slices)
    n_layers = len(blocks(model, family_of(model)))
    device = slices[0].parameter.device
    trained = {s.name: s.parameter.detach().float().clone() for s in slices}  # fp32 trained copies
    grad_norms, losses, queries, tokens = [], [], [], []
    try:
        with only_trainable(model, slices):
            frozen = [p for p in model.parameters() if not p.requires_grad]
            for batch in steps:
                step_loss = 0.0
                for sequence in batch:
                    input_ids = _as_input_ids(sequence, device)
                    if record_queries:
                        loss, step_queries = _forward_recording_queries(lm, loss_fn, input_ids)
                        queries.append(step_queries[:, bos_length:])
                        tokens.append(input_ids[0, bos_length:].cpu())
                    else:
                        loss = loss_fn(model, input_ids)
                    loss = loss / len(batch)
                    loss.backward()  # gradients accumulate over the sequences of a batch
                    step_loss += float(loss.detach())
                assert all(p.grad is None for p in frozen), "a frozen parameter received a gradient"
                squared = torch.zeros(n_layers, dtype=torch.float64, device=device)
                with torch.no_grad():
                    for s, layer in zip(slices, layers, strict=True):
                        if s.parameter.grad is None:  # a parameter the loss does not reach (LCGD's `layers`)
                            grad = torch.zeros_like(trained[s.name])
                        else:
                            grad = s.parameter.grad.float()
                        if s.mask is not None:
                            grad = torch.where(s.mask, grad, torch.zeros_like(grad))  # Q slice untouched
                        squared[layer] += grad.double().square().sum()
                        trained[s.name].add_(grad, alpha=-lr)
                        s.parameter.data.copy_(trained[s.name])
                        s.parameter.grad = None
                grad_norms.append(squared.sqrt().float().cpu())
                losses.append(step_loss)
                if on_step is not None:
                    on_step()
    finally:
        restore(model, original)
    return FinetuneResult(
        tensors=trained,
        grad_norms=torch.stack(grad_norms) if grad_norms else torch.zeros(0, n_layers),
        losses=losses,
        train_queries=torch.cat(queries, dim=1) if queries else None,
        train_tokens=torch.cat(tokens) if tokens else None,
    )


def finetune_gd(
    lm: Model,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    record_queries: bool = False,
    bos_length: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> FinetuneResult:
    """Dai's FT: batch 1, one epoch, one SGD step per demo sequence ([BOS] input label) in the given order."""
    return sgd(
        lm, [[s] for s in demo_sequences], lr, lm_loss,
        record_queries=record_queries, bos_length=bos_length, on_step=on_step,
    )


def finetune_full_batch(
    lm: Model,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    epochs: int = 1,
    on_step: Callable[[], None] | None = None,
) -> FinetuneResult:
    """Full-batch GD: each step on the mean of the demos' losses, ``epochs`` steps; order-invariant."""
    return sgd(lm, [list(demo_sequences)] * epochs, lr, lm_loss, on_step=on_step)
