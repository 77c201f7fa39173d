"""Label-word accuracy of one scoring pass (the lr search and icl-curve): ICL on the encoded prefix or zero-shot."""

from __future__ import annotations

from dataclasses import replace

import torch

from iclgd import metrics
from iclgd.models.capture import encode_prefix
from iclgd.models.loading import LoadedModel
from iclgd.prompts.scoring import BATCH_COST, least_padding_batches, score_batch
from iclgd.prompts.sequences import Prompts, shared_start


@torch.no_grad()
def label_scores(lm: LoadedModel, prompts: Prompts, *, with_demos: bool, batch_size: int = 32,
                 reduction: str = "sum") -> torch.Tensor:
    """Each query's label-word scores ``[N, C]``, in the order of ``prompts.queries``: the log-probability of each
    candidate after the prompt, ICL on the encoded prefix (``with_demos``) or zero-shot. Multi-token label words
    score the sum (or ``reduction="mean"``) of their token log-probs.

    What the pass runs once rather than per query: the demos, and the tokens every query begins with (a
    template's "Review:"), encoded as one prefix after the demos (after the BOS alone for zero-shot). Each query is
    stopped at its prompt end (nothing here reads the label token) and scored in length-sorted batches of at most
    ``batch_size``, cut where they pad least (on CPU; elsewhere the fewest batches, cut so). Neither which rows
    share a batch nor where the prefix ends changes a score beyond float rounding (causal attention)."""
    start = shared_start(prompts.queries)
    prefix_ids = (prompts.prefix_ids if with_demos else prompts.bos_ids) + start
    prefix = encode_prefix(lm, torch.tensor(prefix_ids, dtype=torch.long)) if prefix_ids else None
    rest = replace(prompts, queries=[q.without_first(len(start)) for q in prompts.queries])
    scores = torch.zeros(len(rest.queries), len(rest.label_ids))
    batch_cost = BATCH_COST if lm.device.type == "cpu" else None
    for indices in least_padding_batches([q.n_input for q in rest.queries], batch_size, batch_cost):
        batch = score_batch(lm, rest, indices, prefix=prefix, capture=False, feed_label=False)
        chosen = batch.candidate_logprobs if reduction == "sum" else batch.candidate_mean_logprobs
        scores[torch.tensor(indices)] = chosen.float().cpu()
    return scores


def label_accuracy(lm: LoadedModel, prompts: Prompts, *, with_demos: bool, batch_size: int = 32,
                   reduction: str = "sum") -> float:
    """Label-word accuracy of one pass over ``prompts.queries`` (:func:`label_scores`): the share of queries whose
    gold label word scores highest."""
    scores = label_scores(lm, prompts, with_demos=with_demos, batch_size=batch_size, reduction=reduction)
    return metrics.label_word_accuracy(scores, torch.tensor([q.gold for q in prompts.queries]))
