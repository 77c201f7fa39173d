"""Progress measures of the induction circuit (Olsson et al. 2022), on one layer's attention probabilities.

``attention`` is (batch, heads, T, T), post-softmax, rows the query positions (what transformers returns with
``output_attentions=True`` under eager attention). Each measure is per head, a mean over the batch:

    previous_token_score(attention, positions)   attention from each t in ``positions`` to t - 1
    attention_mass(attention, query, keys)        attention from position ``query`` summed over the keys where the
                                                  (batch, T) mask ``keys`` is True

On an ICL prompt [BOS] (x y SEP)*k x_q: the previous-token head of an induction circuit scores ~1 on the label
positions (each label attends to its input); the induction head puts the query's mass on the labels whose input
matches the query (``attention_mass`` with those labels as keys), the label-aggregation step before it on all
labels.
"""

from __future__ import annotations

import torch


def previous_token_score(attention: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(heads,) mean over the batch and ``positions`` (each >= 1) of the attention from t to t - 1."""
    positions = torch.as_tensor(positions, dtype=torch.long, device=attention.device)
    if positions.numel() == 0 or int(positions.min()) < 1:
        raise ValueError("previous_token_score needs positions >= 1 (position 0 has no previous token)")
    return attention[:, :, positions, positions - 1].mean(dim=(0, 2))


def attention_mass(attention: torch.Tensor, query: int, keys: torch.Tensor) -> torch.Tensor:
    """(heads,) mean over the batch of the attention from position ``query`` summed over the keys where ``keys``
    (batch, T) is True (0 for a row without such keys)."""
    keys = torch.as_tensor(keys, dtype=torch.bool, device=attention.device)
    if keys.shape != (attention.shape[0], attention.shape[-1]):
        raise ValueError(f"keys mask {tuple(keys.shape)} must be (batch, T) = "
                         f"{(attention.shape[0], attention.shape[-1])}")
    return (attention[:, :, query, :] * keys[:, None, :]).sum(-1).mean(0)
