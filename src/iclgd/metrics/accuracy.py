"""Accuracy: label-word accuracy over candidates (Dai) and full-vocabulary accuracy (Shen).

Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log p(targets[..., t]) = log_softmax(logits[..., t, :])[targets[..., t]]: [..., T, V], [..., T] -> [..., T]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def label_scores(
    label_logprobs: Tensor, label_lengths: Tensor, reduction: Literal["sum", "mean"] = "sum"
) -> Tensor:
    """Score of candidate c: Σ_t log p(label_c[t] | prompt, label_c[<t]) ("sum") or that sum / len_c ("mean").

    label_logprobs: [N, C, T] the token log-probs of each candidate's label tokens, right-padded (padding
    ignored); label_lengths: [C] or [N, C] the number of tokens of each candidate. Returns [N, C].
    One-token verbalizers give the same scores under both reductions.
    """
    lengths = torch.as_tensor(label_lengths, device=label_logprobs.device)
    if lengths.dim() == 1:
        lengths = lengths.expand(label_logprobs.shape[:2])
    if bool((lengths < 1).any()) or int(lengths.max()) > label_logprobs.shape[-1]:
        raise ValueError(f"label lengths must be in [1, {label_logprobs.shape[-1]}], got {lengths.tolist()}")
    positions = torch.arange(label_logprobs.shape[-1], device=label_logprobs.device)
    keep = positions < lengths[..., None]
    total = torch.where(keep, label_logprobs, torch.zeros_like(label_logprobs)).sum(-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / lengths.to(total.dtype)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def accuracy(predictions: Tensor, gold: Tensor) -> float:
    """(1/N) Σ_i [prediction_i = gold_i]."""
    predictions, gold = torch.as_tensor(predictions), torch.as_tensor(gold)
    if predictions.shape != gold.shape or predictions.numel() == 0:
        raise ValueError(f"predictions {list(predictions.shape)} and gold {list(gold.shape)} must be one label per "
                         "example, of one shape and not empty")
    return float((predictions == gold.to(predictions.device)).double().mean())


def majority_accuracy(gold: Tensor) -> float:
    """max_c (1/N) Σ_i [gold_i = c]: the accuracy of always predicting the most frequent label (a model that
    ignores its input scores this; ICL or FT below it shows nothing learned)."""
    gold = torch.as_tensor(gold)
    if gold.numel() == 0 or bool((gold < 0).any()):
        raise ValueError(f"gold must hold at least one label index (>= 0), got {gold.tolist()}")
    return float(torch.bincount(gold.flatten().long()).max()) / gold.numel()


NO_PREDICTION = -1


def label_predictions(scores: Tensor) -> Tensor:
    """ŷ = argmax_j score_j over the last dimension (candidates or the vocabulary, [N, C] -> [N]); ties go to the
    first. A row with a NaN score predicts nothing (``NO_PREDICTION``), which every gold label counts wrong: torch's
    argmax takes NaN for the largest value, so a diverged model would otherwise "predict" its first NaN's label."""
    scores = torch.as_tensor(scores)
    if scores.dim() == 0 or scores.shape[-1] == 0:
        raise ValueError(f"scores {list(scores.shape)} must hold a score per candidate in their last dimension")
    predicted = scores.argmax(dim=-1)
    return predicted.masked_fill(scores.isnan().any(dim=-1), NO_PREDICTION)


def label_word_accuracy(scores: Tensor, gold: Tensor) -> float:
    """(1/N) Σ_i [argmax_j score_ij = gold_i] (Dai's label-word accuracy)."""
    return accuracy(label_predictions(scores), gold)


def full_vocab_accuracy(next_token_logits: Tensor, gold_first_token: Tensor) -> float:
    """(1/N) Σ_i [argmax over the whole vocabulary = gold first token] (Shen); can fall below chance."""
    return accuracy(label_predictions(next_token_logits), gold_first_token)
