"""Finetuning on the demonstrations: GD (K/V, SGD) and its variants.

    original = snapshot(lm)                          # the K/V tensors, no deep copy of the model
    result = finetune(lm, demo_sequences, lr, method="gd" | "lcgd", record_queries=True, bos_length=1)
    swap_in(lm, result.tensors); ...FT pass...; restore(lm, original)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from torch import Tensor

from iclgd.errors import UserError
from iclgd.finetune.gd import (
    FinetuneResult,
    Model,
    finetune_full_batch,
    finetune_gd,
    restore,
    sgd,
    snapshot,
    swap_in,
    trainable_slices,
)
from iclgd.finetune.lcgd import finetune_lcgd, layer_causal_loss
from iclgd.finetune.lr_search import (
    DAI_LR_GRID,
    PUBLISHED_LR,
    PUBLISHED_SEED,
    LrSearch,
    published_lr,
    published_seed,
    search_grid,
    search_lr,
)

METHODS = ("gd", "lcgd")


def finetune(
    lm: Model,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    lr: float,
    *,
    method: Literal["gd", "lcgd"] = "gd",
    record_queries: bool = False,
    bos_length: int | None = None,
    on_step: Callable[[], None] | None = None,
) -> FinetuneResult:
    """One step per demo, in the given order, with GD's loss (``"gd"``) or the layer-causal one (``"lcgd"``).

    ``bos_length``: how many BOS tokens start each sequence (0 for a model without BOS); their queries are not
    recorded, since they are not demo tokens (needed with ``record_queries``).
    """
    options = dict(record_queries=record_queries, bos_length=bos_length, on_step=on_step)
    if method == "gd":
        return finetune_gd(lm, demo_sequences, lr, **options)
    if method == "lcgd":
        return finetune_lcgd(lm, demo_sequences, lr, **options)
    raise UserError(f"unknown finetuning method {method!r}: use one of {', '.join(METHODS)}")


__all__ = [
    "DAI_LR_GRID", "METHODS", "PUBLISHED_LR", "PUBLISHED_SEED", "FinetuneResult", "LrSearch", "finetune",
    "finetune_full_batch", "finetune_gd", "finetune_lcgd", "layer_causal_loss", "published_lr", "published_seed",
    "restore", "search_grid", "search_lr", "sgd", "snapshot", "swap_in", "trainable_slices",
]
