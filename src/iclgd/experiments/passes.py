"""Label-word accuracy of one scoring pass (the lr search and icl-curve): ICL on the encoded prefix or zero-shot."""

from __future__ import annotations

import torch

from iclgd import metrics
from iclgd.models.capture import encode_prefix
from iclgd.models.loading import LoadedModel
from iclgd.prompts.scoring import length_sorted_batches, score_batch
from iclgd.prompts.sequences import Prompts


@torch.no_grad()
def label_accuracy(lm: LoadedModel, prompts: Prompts, *, with_demos: bool, batch_size: int = 32,
                   reduction: str = "sum") -> float:
    """Label-word accuracy of one pass over ``prompts.queries``: ICL on the encoded prefix (``with_demos``) or
    zero-shot. Multi-token label words are scored by the sum (or ``reduction="mean"``) of their token log-probs.
    Queries are scored in length-sorted batches (the accuracy does not depend on which rows share a batch, up to
    float32 rounding), each stopped at its prompt end: nothing here reads the label token. 32 per batch: on real
    sentences that pads ~10 % of the tokens where 64 pads ~20 %, and the batch still fills the matmuls."""
    prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids, dtype=torch.long)) if with_demos else None
    scores, gold = [], []
    lengths = [q.n_input for q in prompts.queries]
    for indices in length_sorted_batches(lengths, batch_size):
        batch = score_batch(lm, prompts, indices, prefix=prefix, capture=False, feed_label=False)
        scores.append(batch.candidate_logprobs if reduction == "sum" else batch.candidate_mean_logprobs)
        gold += [prompts.queries[i].gold for i in indices]
    return metrics.label_word_accuracy(torch.cat(scores).cpu(), torch.tensor(gold))
