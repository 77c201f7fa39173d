"""Finetuning on the demonstrations: the one training loop (:func:`train`) every FT method runs.

Dai et al.'s FT baseline, its default:
    for each demo, in the ICL order:                       (batch 1, one epoch, one step per demo)
        loss = mean_t −log p(x_t | x_<t), t = 1..T−1        ([BOS] input label: every token but the first)
        g = ∇ loss w.r.t. the K/V parameters (Q slice of a fused projection masked out)
        W ← W − η g                                         (plain SGD: no momentum, decay, clipping)
Other methods (:mod:`iclgd.finetune.methods`) change the trained parameters, the loss, the optimizer, the batch
and the epochs.

Everything but the trained parameters has requires_grad=False during training, so backward never computes
their gradients; dropout is off (eval mode). The trained tensors are kept in fp32 whatever the model's
dtype (bf16 swallows updates of lr ~1e-4) and copied into the model after each step.

No deep copies of the model: :func:`snapshot` keeps the original trained tensors (all of them for a whole-model
method), the model is restored to them after training, and :func:`swap_in` / :func:`restore` load trained or
original tensors in place.
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

LossFn = Callable[[nn.Module, Tensor, int], Tensor]  # (model, input_ids [1, T], n_label) -> scalar loss
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
    update_rounding_error: ‖W_model − W_trained‖ / ‖W_trained − W_0‖ over the trained tensors at the end: how much
                   of the update the model's own dtype loses when it holds the trained weights (0 in float32;
                   in bf16 most of a small-lr update rounds away, and FT is measured on the rounded weights)
    """

    tensors: dict[str, Tensor]
    grad_norms: Tensor
    losses: list[float]
    train_queries: Tensor | None = None
    train_tokens: Tensor | None = None
    update_rounding_error: float = 0.0


# ---- the trainable tensors: which, snapshot, swap ----

def as_module(lm: Model) -> nn.Module:
    """The torch module of a model or of a loaded one."""
    return lm.model if isinstance(lm, LoadedModel) else lm


def trainable_slices(lm: Model) -> list[TrainableSlice]:
    """The attention K and V projections (weights and biases) of every layer, with fused-Q masks."""
    model = as_module(lm)
    return kv_parameters(model, family_of(model))


def snapshot(slices: Sequence[TrainableSlice] | Model, device: str | torch.device | None = None) -> dict[str, Tensor]:
    """Copies of the trainable tensors (name -> tensor, the model's dtype), on ``device`` (default: the tensors'
    own): what :func:`restore` puts back."""
    if isinstance(slices, (nn.Module, LoadedModel)):
        slices = trainable_slices(slices)
    return {s.name: s.parameter.detach().to(device, copy=True) if device is not None else s.parameter.detach().clone()
            for s in slices}


@torch.no_grad()
def swap_in(lm: Model, tensors: dict[str, Tensor]) -> None:
    """Load ``tensors`` (name -> tensor) into the model's parameters in place (``param.data.copy_``)."""
    params = dict(as_module(lm).named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise KeyError(f"the model has no parameter(s) {missing[:3]}: these tensors belong to another model")
    for name, tensor in tensors.items():
        params[name].data.copy_(tensor)


def restore(lm: Model, original: dict[str, Tensor]) -> None:
    """Put back the tensors of a :func:`snapshot`, bit-exactly."""
    swap_in(lm, original)


def layer_of(model: nn.Module, slices: Sequence[TrainableSlice]) -> list[int | None]:
    """The block index of each slice (None for a parameter outside the blocks: embeddings, final norm)."""
    index = {id(p): layer for layer, block in enumerate(blocks(model, family_of(model))) for p in block.parameters()}
    return [index.get(id(s.parameter)) for s in slices]


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
# A loss is (model, input_ids [1, T], n_label) -> scalar; n_label is how many tokens at the end of the sequence are
# its label word (the targets of the label-token loss; the other losses ignore it).

def next_token_nll(logits: Tensor, input_ids: Tensor) -> Tensor:
    """mean_{t=1..T−1} −log p(x_t | x_<t): logits [1, T, V], input_ids [1, T]; position 0 has no context to be
    predicted from (it is BOS, or the first demo token of a model without BOS)."""
    return F.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])


def lm_loss(model: nn.Module, input_ids: Tensor, n_label: int = 0) -> Tensor:
    """GD's loss (Dai): the mean next-token NLL over every token but the first (after BOS, where there is one)."""
    return next_token_nll(model(input_ids=input_ids, use_cache=False).logits, input_ids)


def label_loss(model: nn.Module, input_ids: Tensor, n_label: int) -> Tensor:
    """Shen et al.'s loss: the mean NLL of the label word's tokens only (the prompt tokens masked)."""
    if not 1 <= n_label < input_ids.shape[1]:
        raise ValueError(f"the label-token loss needs 1 <= n_label < {input_ids.shape[1]}, got {n_label}")
    # The unembedding only at the n_label positions that predict the label: with Gemma's 262k-token vocabulary,
    # applying it at every position is most of a step.
    length = input_ids.shape[1]
    predicting = torch.arange(length - n_label - 1, length - 1, device=input_ids.device)
    logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=predicting).logits
    return F.cross_entropy(logits[0].float(), input_ids[0, -n_label:])


# ---- optimizers: name -> constructor over the fp32 trained copies ----

OPTIMIZERS: dict[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = {
    "sgd": lambda tensors, lr: torch.optim.SGD(tensors, lr=lr, momentum=0.0, weight_decay=0.0),  # W ← W − η g
    "adam": lambda tensors, lr: torch.optim.Adam(tensors, lr=lr),  # torch's defaults: β = (0.9, 0.999), ε = 1e-8
}


# ---- the training loop ----

def _as_input_ids(sequence: Tensor | Sequence[int], device: torch.device) -> Tensor:
    ids = torch.as_tensor(sequence, dtype=torch.long).flatten().to(device)
    if ids.numel() < 2:
        raise UserError(f"a training sequence has {ids.numel()} token(s); it needs BOS and at least one more")
    return ids[None]


def _forward_recording_queries(lm: LoadedModel, loss: Callable[[nn.Module], Tensor],
                               input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, scaled queries [L, T, width] of every position) of one forward pass, gradients unchanged."""
    last = torch.tensor([input_ids.shape[1] - 1])
    request = CaptureRequest(analysis_index=last, test_start=last, all_queries=True)
    with recording(lm, request) as buffer:
        value = loss(lm.model)
    return value, buffer.capture.all_queries[0]


@torch.no_grad()
def rounding_error(slices: Sequence[TrainableSlice], trained: dict[str, Tensor], original: dict[str, Tensor]) -> float:
    """‖what the model holds − the fp32 trained tensors‖ / ‖the trained tensors − the originals‖ (0 for no update);
    exactly 0 where the model is fp32. One tensor at a time: the originals may wait on the CPU."""
    if all(s.parameter.dtype == torch.float32 for s in slices):
        return 0.0
    lost = moved = 0.0
    for s in slices:
        start = original[s.name].to(trained[s.name].device).float()
        lost += float((s.parameter.float() - trained[s.name]).double().square().sum())
        moved += float((trained[s.name] - start).double().square().sum())
    return (lost / moved) ** 0.5 if moved > 0 else 0.0


@torch.no_grad()
def _optimizer_step(slices: Sequence[TrainableSlice], layers: Sequence[int | None], trained: dict[str, Tensor],
                    optimizer: torch.optim.Optimizer, n_layers: int) -> Tensor:
    """Hand the model's gradients (fp32, fused Q slices masked out) to ``optimizer`` over the fp32 ``trained`` copies,
    step, and copy the result into the model; return each layer's gradient norm before the step, [n_layers]."""
    squared = torch.zeros(n_layers, dtype=torch.float64, device=slices[0].parameter.device)
    for s, layer in zip(slices, layers, strict=True):
        if s.parameter.grad is None:  # a parameter the loss does not reach (LCGD's `layers`)
            grad = torch.zeros_like(trained[s.name])
        else:
            grad = s.parameter.grad.float()
        if s.mask is not None:
            grad = torch.where(s.mask, grad, torch.zeros_like(grad))  # Q slice untouched
        if layer is not None:
            squared[layer] += grad.double().square().sum()
        trained[s.name].grad = grad
        s.parameter.grad = None
    optimizer.step()
    for s in slices:
        trained[s.name].grad = None
        s.parameter.data.copy_(trained[s.name])
    return squared.sqrt().float().cpu()


def step_batches(n: int, batch: int | None) -> list[list[int]]:
    """One epoch's steps over n sequences in their order: batches of ``batch`` (None: one full batch)."""
    size = n if batch is None else batch
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]


def train(
    lm: Model,
    sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    slices: Sequence[TrainableSlice] | None = None,
    loss_fn: LossFn | None = None,
    optimizer: str = "sgd",
    batch: int | None = 1,
    epochs: int = 1,
    label_lengths: Sequence[int] | None = None,
    record_queries: bool = False,
    bos_length: int | None = None,
    on_step: Callable[[], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Train ``slices`` (default: the K/V projections) on ``sequences`` and leave the model as it was.

    Each epoch walks the sequences in their order in steps of ``batch`` sequences (None: all of them, i.e.
    full-batch GD); a step's loss is the mean of its sequences' ``loss_fn`` (default: GD's next-token loss), its
    gradient (fused Q slices masked out) goes to ``optimizer`` over fp32 copies of the trained tensors, which are
    copied into the model after every step. ``on_epoch(e)`` runs after epoch e with the model holding the trained
    weights (the per-epoch passes); the original weights are put back, bit for bit, at the end.
    ``label_lengths``: label-word tokens at the end of each sequence (the label-token loss). ``record_queries``:
    keep every token's scaled query per layer in the first epoch, recorded through
    :func:`iclgd.models.capture.recording`, except the first ``bos_length`` positions of each sequence (its BOS,
    which is not a demo token; 0 for a model without BOS); no default guesses it.
    """
    if not lr > 0:
        raise UserError(f"learning rate must be positive, got {lr}: pass lr > 0 (--lr, or `lr` in a config)")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if batch is not None and batch < 1:
        raise UserError(f"batch must be at least 1 (or None for the full batch), got {batch}")
    if epochs < 1:
        raise UserError(f"epochs must be at least 1, got {epochs}")
    if record_queries and bos_length is None:
        raise ValueError("recording queries needs bos_length: how many BOS tokens start each sequence (0 for none)")
    if record_queries and batch != 1:
        raise ValueError("recording queries needs batch 1: each demo token's query is recorded in its own step")
    if label_lengths is not None and len(label_lengths) != len(sequences):
        raise ValueError(f"{len(label_lengths)} label lengths for {len(sequences)} sequences")
    loss_fn = loss_fn or lm_loss
    model = as_module(lm)
    if record_queries and not isinstance(lm, LoadedModel):
        lm = loaded(model, None, name=type(model).__name__)
    slices = list(slices) if slices is not None else trainable_slices(model)
    device = slices[0].parameter.device
    inputs = [_as_input_ids(sequence, device) for sequence in sequences]
    # A step's sequences run in a canonical order (by their tokens): a batch is a set, so full-batch GD comes out
    # bit-identical under any order of the demos, not only in exact arithmetic.
    canonical = [ids[0].tolist() for ids in inputs]
    # The originals wait on the CPU: for a whole-model method on a GPU they are a full copy of the weights.
    original = snapshot(slices, device="cpu")
    layers = layer_of(model, slices)
    n_layers = len(blocks(model, family_of(model)))
    trained = {s.name: s.parameter.detach().float().clone() for s in slices}  # fp32 trained copies
    step = OPTIMIZERS[optimizer](list(trained.values()), lr)
    n_labels = list(label_lengths) if label_lengths is not None else [0] * len(sequences)
    grad_norms, losses, queries, tokens = [], [], [], []
    try:
        with only_trainable(model, slices):
            frozen = [p for p in model.parameters() if not p.requires_grad]
            for epoch in range(1, epochs + 1):
                for indices in step_batches(len(sequences), batch):
                    step_loss = 0.0
                    for i in sorted(indices, key=canonical.__getitem__):
                        input_ids = inputs[i]

                        def loss_of(m: nn.Module, input_ids=input_ids, i=i) -> Tensor:
                            return loss_fn(m, input_ids, n_labels[i])

                        if record_queries and epoch == 1:
                            loss, step_queries = _forward_recording_queries(lm, loss_of, input_ids)
                            queries.append(step_queries[:, bos_length:])
                            tokens.append(input_ids[0, bos_length:].cpu())
                        else:
                            loss = loss_of(model)
                        loss = loss / len(indices)
                        loss.backward()  # gradients accumulate over the sequences of a batch
                        step_loss += float(loss.detach())
                    assert all(p.grad is None for p in frozen), "a frozen parameter received a gradient"
                    grad_norms.append(_optimizer_step(slices, layers, trained, step, n_layers))
                    losses.append(step_loss)
                    if on_step is not None:
                        on_step()
                if on_epoch is not None:
                    on_epoch(epoch)
            update_rounding_error = rounding_error(slices, trained, original)
    finally:
        restore(model, original)
    return FinetuneResult(
        tensors=trained,
        grad_norms=torch.stack(grad_norms) if grad_norms else torch.zeros(0, n_layers),
        losses=losses,
        train_queries=torch.cat(queries, dim=1) if queries else None,
        train_tokens=torch.cat(tokens) if tokens else None,
        update_rounding_error=update_rounding_error,
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
    return train(lm, demo_sequences, lr, record_queries=record_queries, bos_length=bos_length, on_step=on_step)


def finetune_full_batch(
    lm: Model,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    epochs: int = 1,
    on_step: Callable[[], None] | None = None,
) -> FinetuneResult:
    """Full-batch GD: each step on the mean of the demos' losses, ``epochs`` steps; order-invariant."""
    return train(lm, demo_sequences, lr, batch=None, epochs=epochs, on_step=on_step)
