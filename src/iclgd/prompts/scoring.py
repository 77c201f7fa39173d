"""Scoring passes: batches of eval queries through the model, with or without the shared demo prefix.

Queries are right-padded; with a prefix, position ids continue after it and every example attends to
the ONE encoded prefix. A pass returns the next-token log-probabilities at the prompt end (the label
distribution), the candidates' scores, and the captures at the analysis position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from iclgd import metrics
from iclgd.models.capture import Capture, CaptureRequest, Prefix, forward
from iclgd.models.loading import LoadedModel
from iclgd.prompts.sequences import Prompts, Query

Position = Literal["label_token", "prompt_end"]

# What one batch more costs, in padded tokens (the fixed work of a pass: every layer's ops, the prefix attention's
# setup). The time is flat in it: scoring 200 sentences of vader-movie or vader-nyt on SmolLM2-135M took the same
# (within the noise of 2 cores) at 16, 32 and 64, about 12 % less than fixed batches of 32 (10 to 18 batches of 32
# at most, 2 to 8 % of the tokens padding).
BATCH_COST = 32


@dataclass
class BatchScores:
    next_token_logprobs: torch.Tensor  # [B, V] at the prompt end
    candidate_logprobs: torch.Tensor  # [B, C] sum of the candidate's token log-probs
    candidate_mean_logprobs: torch.Tensor  # [B, C] mean over the candidate's tokens
    capture: Capture | None


def batches(n: int, batch_size: int) -> Iterator[list[int]]:
    """Indices 0..n-1 in consecutive batches of ``batch_size`` (the last may be shorter)."""
    for start in range(0, n, batch_size):
        yield list(range(start, min(n, start + batch_size)))


def least_padding_batches(lengths: Sequence[int], max_batch: int,
                          batch_cost: int | None = BATCH_COST) -> list[list[int]]:
    """Batches of at most ``max_batch`` indices in order of length (ties by index), cut where the padded tokens plus
    ``batch_cost`` tokens per batch (what one more batch costs in fixed work) are fewest: an exact dynamic programme
    over the sorted lengths, O(n·max_batch). ``batch_cost=None``: the fewest batches, cut where they pad least (a
    device where one more batch costs more than any padding). Batches of a fixed size pad the last, longest one to
    its longest sentence: on vader-movie's 200 eval sentences that pads about 11 % of the tokens, these batches
    about 5 %. For passes that only aggregate (accuracy); the passes that store per-example results batch
    contiguously."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, not {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    width = [lengths[i] for i in order]
    if batch_cost is None:  # more than all the padding there can be: one batch more never pays
        batch_cost = max(width, default=0) * len(width) + 1
    cost = [0] * (len(order) + 1)  # cost[j]: least cost of batching the j shortest
    cut = [0] * (len(order) + 1)  # cut[j]: where the last batch of that best batching starts
    for end in range(1, len(order) + 1):
        cost[end], cut[end] = min((cost[start] + width[end - 1] * (end - start) + batch_cost, start)
                                  for start in range(max(0, end - max_batch), end))
    bounds, end = [], len(order)
    while end > 0:
        bounds.append((cut[end], end))
        end = cut[end]
    return [order[start:end] for start, end in reversed(bounds)]


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def pad_id(lm: LoadedModel) -> int:
    """The id right padding uses: the tokenizer's pad token, else its EOS, else 0 (padding is masked anyway)."""
    tokenizer = lm.tokenizer
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def score_batch(
    lm: LoadedModel,
    prompts: Prompts,
    indices: Sequence[int],
    *,
    prefix: Prefix | None,
    position: Position = "label_token",
    capture: bool = True,
    demo_logits: bool = False,
    feed_label: bool = True,
) -> BatchScores:
    """One batch of queries. Without a prefix the sequence is [BOS] query (ZS and FT), with it the query alone.
    ``feed_label=False`` stops each query at its prompt end: the scores are the same (causal attention), with one
    token less per query and less padding. Passes whose distributions are compared with a capturing pass keep the
    label token, so that both run the same shapes and agree to the bit (full-batch GD's order invariance)."""
    if capture and position == "label_token" and not feed_label:
        raise ValueError("a capture at the label token needs the label token fed: feed_label=True")
    queries: list[Query] = [prompts.queries[i] for i in indices]
    lead = [] if prefix is not None else prompts.bos_ids
    rows = [lead + (q.input_ids if feed_label else q.prompt_ids) for q in queries]
    input_ids, attention_mask = _pad(rows, pad_id(lm))
    offset = len(lead)
    prompt_end = torch.tensor([offset + q.prompt_end for q in queries], dtype=torch.long)
    request = None
    if capture:
        analysis = prompt_end + 1 if position == "label_token" else prompt_end
        request = CaptureRequest(
            analysis_index=analysis,
            test_start=torch.full((len(queries),), offset, dtype=torch.long),
            demo_key_index=(torch.tensor(prompts.demo_positions, dtype=torch.long) if demo_logits else None),
        )
    logits, captured = forward(
        lm, input_ids, attention_mask, prefix=prefix, request=request, logits_at=prompt_end[:, None]
    )
    next_token = torch.log_softmax(logits[:, 0].float(), dim=-1)
    label_lengths = [len(ids) for ids in prompts.label_ids]
    if all(n == 1 for n in label_lengths):
        first = torch.tensor([ids[0] for ids in prompts.label_ids])
        candidate = next_token[:, first]
        return BatchScores(next_token, candidate, candidate, captured)
    total, mean = _multi_token_candidates(lm, prompts, queries, lead, prefix)
    return BatchScores(next_token, total, mean, captured)


def _multi_token_candidates(
    lm: LoadedModel, prompts: Prompts, queries: list[Query], lead: list[int], prefix: Prefix | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and mean of each candidate's token log-probs, one extra pass per candidate (accuracy only)."""
    lengths = torch.tensor([len(label) for label in prompts.label_ids])
    width = int(lengths.max())
    logprobs = torch.zeros(len(queries), len(prompts.label_ids), width)  # [N, C, T], right-padded
    for c, label in enumerate(prompts.label_ids):
        rows = [lead + q.prompt_ids + label for q in queries]
        input_ids, attention_mask = _pad(rows, pad_id(lm))
        start = torch.tensor([len(lead) + q.n_input - 1 for q in queries])
        positions = start[:, None] + torch.arange(len(label))[None, :]
        logits, _ = forward(lm, input_ids, attention_mask, prefix=prefix, request=None, logits_at=positions)
        targets = torch.tensor(label).expand(len(queries), -1)
        logprobs[:, c, : len(label)] = metrics.token_logprobs(logits.cpu(), targets)
    return metrics.label_scores(logprobs, lengths, "sum"), metrics.label_scores(logprobs, lengths, "mean")
