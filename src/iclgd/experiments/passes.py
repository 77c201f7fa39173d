"""The scoring passes every experiment shares, interleaved per batch of eval examples.

    prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids))
    for indices, scores in interleaved_passes(lm, prompts, prefix=prefix, weights={"gd": tensors}, original=snapshot):
        scores["zs"], scores["icl"], scores["gd"]          # BatchScores of the batch's eval examples

ZS runs the original weights on ``[BOS] query``, ICL the original weights on the query after the one encoded
prefix, and every entry of ``weights`` (trained tensors, name -> tensor) is swapped in place, scored on
``[BOS] query`` and swapped back. Interleaving keeps one batch of captures in memory at a time, and the passes of
an example sit side by side for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from iclgd import finetune as finetuning
from iclgd import metrics
from iclgd.models.capture import Prefix, encode_prefix
from iclgd.models.loading import LoadedModel
from iclgd.prompts.scoring import BatchScores, Position, batches, score_batch
from iclgd.prompts.sequences import Prompts


def interleaved_passes(
    lm: LoadedModel,
    prompts: Prompts,
    *,
    prefix: Prefix | None,
    weights: Mapping[str, Mapping[str, Tensor]],
    original: Mapping[str, Tensor],
    batch_size: int,
    position: Position = "label_token",
    capture: bool = True,
    demo_logits: Callable[[Sequence[int]], bool] = lambda indices: False,
) -> Iterator[tuple[list[int], dict[str, BatchScores]]]:
    """Per batch: its eval indices and the scores of "zs", "icl" (when ``prefix`` is given) and each ``weights``
    entry. ``demo_logits(indices)`` says whether the ICL pass of that batch keeps the scores over the demo tokens
    (Kendall). The model holds ``original`` between passes and after the loop."""
    for indices in batches(len(prompts.queries), batch_size):
        scores = {"zs": score_batch(lm, prompts, indices, prefix=None, position=position, capture=capture)}
        if prefix is not None:
            scores["icl"] = score_batch(lm, prompts, indices, prefix=prefix, position=position, capture=capture,
                                        demo_logits=demo_logits(indices))
        for name, tensors in weights.items():
            finetuning.swap_in(lm, tensors)
            try:
                scores[name] = score_batch(lm, prompts, indices, prefix=None, position=position, capture=capture)
            finally:
                finetuning.restore(lm, original)
        yield indices, scores


@torch.no_grad()
def label_accuracy(lm: LoadedModel, prompts: Prompts, *, with_demos: bool, batch_size: int = 64,
                   reduction: str = "sum") -> float:
    """Label-word accuracy of one pass over ``prompts.queries``: ICL on the encoded prefix (``with_demos``) or
    zero-shot. Multi-token label words are scored by the sum (or ``reduction="mean"``) of their token log-probs."""
    prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids, dtype=torch.long)) if with_demos else None
    scores, gold = [], []
    for indices in batches(len(prompts.queries), batch_size):
        batch = score_batch(lm, prompts, indices, prefix=prefix, capture=False)
        scores.append(batch.candidate_logprobs if reduction == "sum" else batch.candidate_mean_logprobs)
        gold += [prompts.queries[i].gold for i in indices]
    return metrics.label_word_accuracy(torch.cat(scores).cpu(), torch.tensor(gold))
