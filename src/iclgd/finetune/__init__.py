"""Finetuning on the demonstrations: FT methods as data (:mod:`iclgd.finetune.methods`), one training loop.

    original = snapshot(lm)                          # the K/V tensors, no deep copy of the model
    result = finetune(lm, demo_sequences, lr, method="gd" | "lcgd" | "whole-adam-label" | ..., epochs=1,
                      record_queries=True, bos_length=1)
    swap_in(lm, result.tensors); ...FT pass...; restore(lm, original)
"""

from __future__ import annotations

from iclgd.finetune.gd import (
    OPTIMIZERS,
    FinetuneResult,
    Model,
    finetune_full_batch,
    finetune_gd,
    label_loss,
    lm_loss,
    restore,
    snapshot,
    step_batches,
    swap_in,
    train,
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
from iclgd.finetune.methods import BUILT_IN, LOSSES, PARAMETERS, FTMethod, finetune, parse_method

__all__ = [
    "BUILT_IN", "DAI_LR_GRID", "LOSSES", "OPTIMIZERS", "PARAMETERS", "FTMethod", "Model", "label_loss", "lm_loss",
    "parse_method", "step_batches", "train", "PUBLISHED_LR", "PUBLISHED_SEED", "FinetuneResult", "LrSearch", "finetune",
    "finetune_full_batch", "finetune_gd", "finetune_lcgd", "layer_causal_loss", "published_lr", "published_seed",
    "restore", "search_grid", "search_lr", "snapshot", "swap_in", "trainable_slices",
]
