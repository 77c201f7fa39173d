"""FT methods as data: a method is which parameters train, on which tokens, with which optimizer and batch.

    gd          Dai et al.: K/V of every layer, every demo token, SGD, batch 1 (one step per demo)
    lcgd        Deutch et al.: the same with the layer-causal loss (their code: block readout)
    lcgd-paper  Deutch et al.'s text: the layer-causal loss on the attention output, one step per demo token
    <params>-<steps>[-<loss>][@<lr>]      any other combination, by name:
        params  kv | whole (every parameter) | wv:<layer> (W_V of one layer: middle, deep or an index)
        steps   gd (SGD, full batch) | sgd (batch 1) | sgd<b> (batch b) | adam (full batch) | adam<b>
        loss    demo (every demo token but the first: Dai's, the default) | label (the label word only: Shen's)
        @lr     this method's learning rate (default: the unit's)
    e.g. whole-gd-label, wv:middle-adam-label@1e-4, kv-sgd2, kv-sgd (= gd)

Each part is one entry of its table below (PARAMETERS, LOSSES, iclgd.finetune.gd.OPTIMIZERS); a new kind of
method is one entry there. Every method runs the unit's epochs through :func:`iclgd.finetune.gd.train`, which
restores exactly the tensors it trained.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from iclgd.errors import UserError, warn
from iclgd.finetune.gd import (
    OPTIMIZERS,
    FinetuneResult,
    LossFn,
    Model,
    as_module,
    label_loss,
    lm_loss,
    step_batches,
    train,
)
from iclgd.finetune.lcgd import PAPER_LOSS, layer_causal_loss, token_steps
from iclgd.models.families import TrainableSlice, blocks, family_of, projection_parameters

# (model, resolved layer or None) -> the tensors a method trains.
PARAMETERS: dict[str, Callable[[nn.Module, int | None], list[TrainableSlice]]] = {
    "kv": lambda model, layer: projection_parameters(model, family_of(model), ("k", "v")),
    "whole": lambda model, layer: [TrainableSlice(name, p) for name, p in model.named_parameters()],
    "wv": lambda model, layer: projection_parameters(model, family_of(model), ("v",), [layer]),
}
LAYERED = ("wv",)  # parameter sets of one layer: their name carries it (wv:middle, wv:deep, wv:12)
LOSSES: dict[str, LossFn] = {
    "demo": lm_loss,
    "label": label_loss,
    "layer_causal": layer_causal_loss,
    "layer_causal_paper": PAPER_LOSS,
}
# Losses that learn one token at a time: each demo becomes its prefixes, one step each (iclgd.finetune.lcgd).
PER_TOKEN = frozenset({"layer_causal_paper"})
# Named layers: middle = L // 2, deep = the last layer (iclgd's reading of Shen et al.'s "a middle / deep layer").
NAMED_LAYERS: dict[str, Callable[[int], int]] = {"middle": lambda n: n // 2, "deep": lambda n: n - 1}


@dataclass(frozen=True)
class FTMethod:
    """One finetuning method (see the module docstring for its name)."""

    name: str
    params: str = "kv"
    layer: str | None = None  # "middle" | "deep" | an index, for a LAYERED parameter set
    loss: str = "demo"
    optimizer: str = "sgd"
    batch: int | None = 1  # sequences per step; None: all of them (full batch)
    lr: float | None = None  # None: the unit's learning rate

    def resolve_layer(self, n_layers: int) -> int | None:
        """The layer index this method trains, for a model of ``n_layers`` blocks (None for every layer)."""
        if self.layer is None:
            return None
        index = NAMED_LAYERS[self.layer](n_layers) if self.layer in NAMED_LAYERS else int(self.layer)
        if not 0 <= index < n_layers:
            raise UserError(f"method {self.name!r} trains layer {index}, but the model has {n_layers} layers "
                            f"(0..{n_layers - 1}): use an index in range, middle or deep")
        return index

    @property
    def is_dai(self) -> bool:
        """Dai et al.'s FT (gd): K/V, every demo token, SGD, batch 1 (its random-direction control and Kendall)."""
        return (self.params, self.loss, self.optimizer, self.batch) == ("kv", "demo", "sgd", 1)

    def same_training(self, other: FTMethod) -> bool:
        """Whether two names train alike (gd and kv-sgd; a method's own lr aside)."""
        return (self.params, self.layer, self.loss, self.optimizer, self.batch) == (
            other.params, other.layer, other.loss, other.optimizer, other.batch)

    def check_layers(self, later: Sequence[FTMethod], n_layers: int) -> None:
        """The layer this method trains is in range (UserError otherwise); a warning where one of the ``later``
        methods trains alike on the same layer of an ``n_layers``-block model (wv:middle and wv:deep are one layer
        of a 2-layer model): their results are the same."""
        layer = self.resolve_layer(n_layers)
        for other in later:
            if (other.lr == self.lr and other.layer != self.layer and other.resolve_layer(n_layers) == layer
                    and (other.params, other.loss, other.optimizer, other.batch) == (
                        self.params, self.loss, self.optimizer, self.batch)):
                warn(f"methods {self.name!r} and {other.name!r} train the same layer ({layer}) of this "
                     f"{n_layers}-layer model, alike: their results are the same")

    def step_sequences(self, sequences: Sequence[Tensor | Sequence[int]]) -> list:
        """What one step trains on, in order: the demos, or for a per-token loss each demo's prefixes."""
        return token_steps(sequences) if self.loss in PER_TOKEN else list(sequences)

    def steps_per_epoch(self, sequences: Sequence[Tensor | Sequence[int]]) -> int:
        return len(step_batches(len(self.step_sequences(sequences)), self.batch))

    def slices(self, lm: Model) -> list[TrainableSlice]:
        model = as_module(lm)
        return PARAMETERS[self.params](model, self.resolve_layer(len(blocks(model, family_of(model)))))


BUILT_IN: dict[str, FTMethod] = {
    "gd": FTMethod("gd"),
    "lcgd": FTMethod("lcgd", loss="layer_causal"),
    "lcgd-paper": FTMethod("lcgd-paper", loss="layer_causal_paper"),
}
_STEPS = re.compile(r"(?P<optimizer>[a-z]+?)(?P<batch>\d*)")


def parse_method(name: str) -> FTMethod:
    """The method a name stands for (a built-in name, or ``<params>-<steps>[-<loss>][@<lr>]``)."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    usage = ("a method is gd, lcgd, lcgd-paper or <params>-<steps>[-<loss>][@<lr>]: params kv | whole | "
             "wv:<middle|deep|index>, steps gd | sgd[<batch>] | adam[<batch>], loss demo | label "
             "(e.g. whole-adam-label@1e-4)")
    body, _, lr_text = name.partition("@")
    parts = body.split("-")
    if len(parts) not in (2, 3):
        raise UserError(f"unknown FT method {name!r}: {usage}")
    params, _, layer = parts[0].partition(":")
    if params not in PARAMETERS:
        raise UserError(f"unknown parameter set {params!r} in method {name!r}: {usage}")
    if (params in LAYERED) != bool(layer):
        raise UserError(f"method {name!r}: {params} {'needs a layer' if params in LAYERED else 'takes no layer'}; "
                        f"{usage}")
    if layer and not (layer in NAMED_LAYERS or layer.isdigit()):
        raise UserError(f"unknown layer {layer!r} in method {name!r}: use middle, deep or a layer index")
    steps = _STEPS.fullmatch(parts[1])
    optimizer = steps["optimizer"] if steps else parts[1]
    if optimizer == "gd":
        optimizer, batch = "sgd", None  # plain GD: SGD on the full batch
        if steps and steps["batch"]:
            raise UserError(f"method {name!r}: gd is full batch; use sgd<batch> for mini-batches")
    elif steps and optimizer in OPTIMIZERS:
        batch = int(steps["batch"]) if steps["batch"] else (1 if optimizer == "sgd" else None)
    else:
        raise UserError(f"unknown optimizer {parts[1]!r} in method {name!r}: use gd, sgd[<batch>] or "
                        f"adam[<batch>] ({', '.join(OPTIMIZERS)} are the optimizers)")
    if batch == 0:
        raise UserError(f"method {name!r}: the batch must be at least 1")
    loss = parts[2] if len(parts) == 3 else "demo"
    if loss not in ("demo", "label"):
        raise UserError(f"unknown loss {loss!r} in method {name!r}: use demo or label")
    lr = None
    if "@" in name:
        try:
            lr = float(lr_text)
        except ValueError:
            raise UserError(f"method {name!r}: {lr_text!r} is not a learning rate") from None
        if not 0 < lr < float("inf"):
            raise UserError(f"method {name!r}: the learning rate must be positive and finite")
    return FTMethod(name, params, layer or None, loss, optimizer, batch, lr)


def finetune(
    lm: Model,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    method: str | FTMethod = "gd",
    epochs: int = 1,
    label_lengths: Sequence[int] | None = None,
    record_queries: bool = False,
    bos_length: int | None = None,
    on_step: Callable[[], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Run one FT method on the demos, in their order (``lr``: the unit's, unless the method names its own).

    ``bos_length``: how many BOS tokens start each sequence (0 for a model without BOS); their queries are not
    recorded, since they are not demo tokens (needed with ``record_queries``). ``label_lengths``: the label-word
    tokens ending each sequence (needed by the label-token loss). ``on_epoch(e)`` runs after epoch e with the
    trained weights in the model; the model ends with its original weights.
    """
    spec = method if isinstance(method, FTMethod) else parse_method(method)
    if spec.loss == "label" and label_lengths is None:
        raise ValueError(f"method {spec.name!r} trains on the label tokens: pass label_lengths")
    if spec.loss in PER_TOKEN:
        if record_queries:
            raise ValueError(f"method {spec.name!r} steps once per token: it records no queries")
        label_lengths = None  # its loss reads the last token of each prefix
    return train(
        lm, spec.step_sequences(demo_sequences), spec.lr or lr, slices=spec.slices(lm), loss_fn=LOSSES[spec.loss],
        optimizer=spec.optimizer, batch=spec.batch, epochs=epochs, label_lengths=label_lengths,
        record_queries=record_queries, bos_length=bos_length, on_step=on_step, on_epoch=on_epoch,
    )
