"""Finetuning on the demonstrations: FT methods as data (:mod:`iclgd.finetune.methods`), one training loop.

    spec = parse_method("gd" | "lcgd" | "whole-adam-label" | ...)
    original = snapshot(spec.slices(lm))            # exactly the tensors the method trains, no deep copy otherwise
    result = finetune(lm, demo_sequences, lr, method=spec, epochs=1, label_lengths=..., on_epoch=...)
    swap_in(lm, result.tensors); ...FT pass...; restore(lm, original)
(or measure inside training: ``on_epoch(e)`` runs with the trained weights in the model)
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
    HALF_DECADE_GRID,
    PUBLISHED_LR,
    PUBLISHED_SEED,
    LrSearch,
    halving_search,
    no_signal,
    published_lr,
    published_seed,
    race_grid,
    search_grid,
    search_lr,
)
from iclgd.finetune.methods import BUILT_IN, LOSSES, PARAMETERS, FTMethod, finetune, parse_method

__all__ = [
    "BUILT_IN", "DAI_LR_GRID", "HALF_DECADE_GRID", "halving_search", "no_signal", "race_grid",
    "LOSSES", "OPTIMIZERS", "PARAMETERS", "FTMethod", "Model", "label_loss", "lm_loss",
    "parse_method", "step_batches", "train", "PUBLISHED_LR", "PUBLISHED_SEED", "FinetuneResult", "LrSearch", "finetune",
    "finetune_full_batch", "finetune_gd", "finetune_lcgd", "layer_causal_loss", "published_lr", "published_seed",
    "restore", "search_grid", "search_lr", "snapshot", "swap_in", "trainable_slices",
]
