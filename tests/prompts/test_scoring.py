"""Scoring passes against plain forward passes of the stock model: one-token and multi-token label words."""

import pytest
import torch

from iclgd.experiments.passes import label_accuracy, label_scores
from iclgd.models.capture import encode_prefix
from iclgd.models.loading import loaded
from iclgd.models.tiny import tiny_model
from iclgd.prompts.scoring import score_batch
from iclgd.prompts.sequences import build_prompts


def _logprob_of(model, sequence: list[int], start: int) -> list[float]:
    """log p(sequence[t] | sequence[:t]) for t >= start, from one forward of the whole sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[t - 1, sequence[t]]) for t in range(start, len(sequence))]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_multi_token_candidates_are_the_sum_and_mean_of_their_token_logprobs(family):
    stock, tokenizer = tiny_model(family, seed=3)
    lm = loaded(tiny_model(family, seed=3)[0], tokenizer, name=family)
    label_words = [" Negative review", " Positive", " very good film"]
    prompts = build_prompts(
        tokenizer, demo_inputs=["Review: the plot was bad Sentiment:", "Review: a great film Sentiment:"],
        demo_labels=[0, 1], eval_inputs=["Review: worst movie Sentiment:", "Review: I love it Sentiment:"],
        eval_labels=[0, 1], label_words=label_words, bos="bos_token" if family == "llama" else "eos_token",
        sep="\n", max_context=256, single_token_labels=False,
    )
    assert sorted(len(ids) for ids in prompts.label_ids)[-1] > 1
    prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids))
    for with_demos in (False, True):
        scores = score_batch(lm, prompts, [0, 1], prefix=prefix if with_demos else None, capture=False)
        for row, query in enumerate(prompts.queries):
            lead = prompts.prefix_ids if with_demos else prompts.bos_ids
            context = lead + query.input_ids[: query.n_input]
            for c, label in enumerate(prompts.label_ids):
                expected = _logprob_of(stock, context + label, len(context))
                assert float(scores.candidate_logprobs[row, c]) == pytest.approx(sum(expected), abs=1e-4)
                assert float(scores.candidate_mean_logprobs[row, c]) == pytest.approx(sum(expected) / len(label),
                                                                                     abs=1e-4)
        predicted = scores.candidate_logprobs.argmax(-1)
        gold = torch.tensor([q.gold for q in prompts.queries])
        assert label_accuracy(lm, prompts, with_demos=with_demos) == float((predicted == gold).double().mean())


def test_a_diverged_model_labels_nothing_right():
    """NaN weights (FT at an lr that blows up, as the lr search's top grid points can) give NaN scores; torch's
    argmax would read them as label 0 and score every gold-0 row right."""
    model, tokenizer = tiny_model("llama", seed=3)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    lm = loaded(model, tokenizer, name="llama")
    prompts = build_prompts(
        tokenizer, demo_inputs=["Review: bad Sentiment:"], demo_labels=[0],
        eval_inputs=["Review: worst Sentiment:", "Review: awful Sentiment:"], eval_labels=[0, 0],
        label_words=[" bad", " good"], bos="bos_token", sep="\n", max_context=256, single_token_labels=False,
    )
    assert torch.isnan(label_scores(lm, prompts, with_demos=True)).all()
    assert label_accuracy(lm, prompts, with_demos=True) == 0.0
    assert label_accuracy(lm, prompts, with_demos=False) == 0.0


def _padded_cost(lengths, batches, batch_cost):
    return sum(max(lengths[i] for i in b) * len(b) + batch_cost for b in batches)


def test_least_padding_batches_cover_every_index_once_in_order_of_length():
    from iclgd.prompts.scoring import least_padding_batches

    lengths = [5, 2, 9, 2, 7, 5, 1]
    for max_batch in (1, 3, 7):
        batches = least_padding_batches(lengths, max_batch)
        assert [i for b in batches for i in b] == [6, 1, 3, 0, 5, 4, 2]  # by length, ties by index
        assert all(1 <= len(b) <= max_batch for b in batches)
    assert least_padding_batches([], 3) == []
    with pytest.raises(ValueError, match="max_batch"):
        least_padding_batches(lengths, 0)


def test_least_padding_batches_by_hand():
    """Three short queries and a long one: apart they pad nothing (3·1 + 10 tokens, two batches), together they pad
    27 tokens (4·10, one batch); the cost of a batch decides."""
    from iclgd.prompts.scoring import least_padding_batches

    assert least_padding_batches([1, 1, 10, 1], 4, batch_cost=0) == [[0, 1, 3], [2]]
    assert least_padding_batches([1, 1, 10, 1], 4, batch_cost=26) == [[0, 1, 3], [2]]  # 13 + 52 < 40 + 26
    assert least_padding_batches([1, 1, 10, 1], 4, batch_cost=28) == [[0, 1, 3, 2]]  # 40 + 28 < 13 + 56
    assert least_padding_batches([1, 1, 10, 1], 2, batch_cost=100) == [[0, 1], [3, 2]]  # at most 2 per batch


def test_least_padding_batches_are_the_cheapest_cut_of_the_sorted_order():
    """Against every cut of the sorted order into batches of at most max_batch (brute force)."""
    import itertools
    import random

    from iclgd.prompts.scoring import least_padding_batches

    rng = random.Random(0)
    for _ in range(40):
        lengths = [rng.randint(1, 30) for _ in range(rng.randint(1, 9))]
        max_batch, batch_cost = rng.randint(1, 5), rng.choice([0, 3, 16, 64])
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        best = None
        for cuts in itertools.product([False, True], repeat=len(order) - 1):
            batches, start = [], 0
            for end, cut in enumerate([*cuts, True], start=1):
                if cut:
                    batches.append(order[start:end])
                    start = end
            if all(len(b) <= max_batch for b in batches):
                cost = _padded_cost(lengths, batches, batch_cost)
                best = cost if best is None else min(best, cost)
        found = least_padding_batches(lengths, max_batch, batch_cost)
        assert _padded_cost(lengths, found, batch_cost) == best


def test_shared_start_leaves_each_query_its_last_prompt_token():
    from iclgd.prompts.sequences import Query, shared_start

    queries = [Query([7, 8, 9, 4, 1], 4, 0), Query([7, 8, 5, 1], 3, 1), Query([7, 8, 9, 9, 9, 2], 5, 0)]
    assert shared_start(queries) == [7, 8]
    assert queries[1].without_first(2) == Query([5, 1], 1, 1)
    assert shared_start([Query([7, 8, 1], 2, 0), Query([7, 8, 9, 1], 3, 0)]) == [7]  # the first keeps 8
    assert shared_start([Query([7, 8, 1], 2, 0)]) == [7]
    assert shared_start([Query([3, 8, 1], 2, 0), Query([7, 8, 1], 2, 0)]) == []
    assert shared_start([]) == []
    with pytest.raises(ValueError, match="last prompt token"):
        queries[1].without_first(3)


@pytest.mark.parametrize("with_bos", [True, False])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neo", "opt", "mistral", "gemma2"])
def test_label_scores_are_the_full_sequences_logprobs(family, with_bos):
    """The shared start ("Review:") run once in the prefix, batches cut where they pad least: each query's scores
    are still those of [BOS] demos query label through the stock model, for learned positions (GPT-2, OPT), local
    windows reaching into the prefix (GPT-Neo, Mistral, Gemma 2: window 4), soft caps (Gemma 2), without a BOS, and
    for a multi-token label word."""
    from iclgd.prompts.sequences import shared_start

    stock, tokenizer = tiny_model(family, seed=6)
    lm = loaded(tiny_model(family, seed=6)[0], tokenizer, name=family)
    bos = ("bos_token" if tokenizer.bos_token_id is not None else "eos_token") if with_bos else None
    prompts = build_prompts(
        tokenizer, demo_inputs=["Review: the plot was bad Sentiment:", "Review: a great film Sentiment:"],
        demo_labels=[0, 1], eval_inputs=["Review: worst movie Sentiment:", "Review: I love it so much Sentiment:",
                                         "Review: fine Sentiment:"],
        eval_labels=[0, 1, 1], label_words=[" Negative review", " Positive"], bos=bos, sep="\n", max_context=256,
        single_token_labels=False,
    )
    assert len(shared_start(prompts.queries)) >= 2 and max(len(ids) for ids in prompts.label_ids) > 1
    for with_demos in (False, True):
        lead = prompts.prefix_ids if with_demos else prompts.bos_ids
        for batch_size in (1, 2):
            scores = label_scores(lm, prompts, with_demos=with_demos, batch_size=batch_size)
            for row, query in enumerate(prompts.queries):
                context = lead + query.prompt_ids
                for c, label in enumerate(prompts.label_ids):
                    expected = sum(_logprob_of(stock, context + label, len(context)))
                    assert float(scores[row, c]) == pytest.approx(expected, abs=1e-4), (with_demos, row, c)


def test_least_padding_batches_without_a_batch_cost_are_the_fewest():
    from iclgd.prompts.scoring import least_padding_batches

    lengths = [1, 1, 10, 1, 2, 9]
    assert least_padding_batches(lengths, 3, batch_cost=None) == [[0, 1, 3], [4, 5, 2]]
    # Two batches either way at 4 at most: 4·2 + 2·10 = 28 padded-token slots beats 3·1 + 3·10 and 2·1 + 4·10.
    assert least_padding_batches(lengths, 4, batch_cost=None) == [[0, 1, 3, 4], [5, 2]]
    assert least_padding_batches(lengths, 6, batch_cost=None) == [[0, 1, 3, 4, 5, 2]]


def test_label_accuracy_runs_the_shared_start_once_in_the_prefix(monkeypatch):
    """Every query starts "Review:": those tokens go to the end of the encoded prefix (after the demos, or after the
    BOS alone for zero-shot) and each query is fed without them."""
    import iclgd.experiments.passes as passes
    import iclgd.prompts.scoring as scoring

    stock, tokenizer = tiny_model("llama", seed=5)
    lm = loaded(stock, tokenizer, name="llama")
    prompts = build_prompts(
        tokenizer, demo_inputs=["Review: the plot was bad Sentiment:", "Review: a great film Sentiment:"],
        demo_labels=[0, 1], eval_inputs=["Review: worst movie Sentiment:", "Review: I love it so much Sentiment:"],
        eval_labels=[0, 1], label_words=[" Negative", " Positive"], bos="bos_token", sep="\n", max_context=256,
    )
    from iclgd.prompts.sequences import shared_start

    start = shared_start(prompts.queries)
    assert tokenizer.decode(start).strip() == "Review:"
    encoded, fed = [], []
    real_encode, real_forward = passes.encode_prefix, scoring.forward
    monkeypatch.setattr(passes, "encode_prefix", lambda lm, ids: encoded.append(ids.tolist()) or real_encode(lm, ids))
    monkeypatch.setattr(scoring, "forward", lambda lm, ids, *a, **kw: fed.append(ids.shape[1]) or
                        real_forward(lm, ids, *a, **kw))
    for with_demos, lead in ((True, prompts.prefix_ids), (False, prompts.bos_ids)):
        encoded.clear()
        fed.clear()
        label_accuracy(lm, prompts, with_demos=with_demos)
        assert encoded == [lead + start]
        assert fed == [max(q.n_input for q in prompts.queries) - len(start)]


def test_label_accuracy_in_sorted_batches_equals_one_query_at_a_time():
    """Queries of different lengths: every batch size scores each query as a batch of one does."""
    stock, tokenizer = tiny_model("llama", seed=5)
    lm = loaded(stock, tokenizer, name="llama")
    words = ["bad", "good", "fine", "awful", "great", "plot", "film", "it", "was", "so"]
    inputs = [f"Review: {' '.join(words[: 1 + (i * 7) % 9])} Sentiment:" for i in range(12)]
    prompts = build_prompts(
        tokenizer, demo_inputs=inputs[:2], demo_labels=[0, 1], eval_inputs=inputs,
        eval_labels=[i % 2 for i in range(12)], label_words=[" Negative", " Positive"], bos="bos_token", sep="\n",
        max_context=256, single_token_labels=False,
    )
    assert len({len(q.input_ids) for q in prompts.queries}) > 3
    for with_demos in (False, True):
        prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids)) if with_demos else None
        one_by_one = torch.cat([score_batch(lm, prompts, [i], prefix=prefix, capture=False).candidate_logprobs
                                for i in range(len(prompts.queries))])
        gold = torch.tensor([q.gold for q in prompts.queries])
        expected = float((one_by_one.argmax(-1) == gold).double().mean())
        assert 0.0 < expected < 1.0
        for batch_size in (1, 5, 64):
            assert label_accuracy(lm, prompts, with_demos=with_demos, batch_size=batch_size) == expected


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_pass_that_stops_at_the_prompt_end_scores_as_the_full_pass(family, monkeypatch):
    """feed_label=False feeds one token less per query; the scores at the prompt end do not change."""
    import iclgd.prompts.scoring as scoring

    stock, tokenizer = tiny_model(family, seed=4)
    lm = loaded(stock, tokenizer, name=family)
    prompts = build_prompts(
        tokenizer, demo_inputs=["Review: the plot was bad Sentiment:", "Review: a great film Sentiment:"],
        demo_labels=[0, 1], eval_inputs=["Review: worst movie Sentiment:", "Review: I love it so much Sentiment:"],
        eval_labels=[0, 1], label_words=[" Negative", " Positive"], bos="bos_token" if family == "llama" else
        "eos_token", sep="\n", max_context=256,
    )
    fed: list[int] = []
    real_forward = scoring.forward
    monkeypatch.setattr(scoring, "forward", lambda lm, ids, *a, **kw: fed.append(ids.shape[1]) or
                        real_forward(lm, ids, *a, **kw))
    for prefix in (None, encode_prefix(lm, torch.tensor(prompts.prefix_ids))):
        fed.clear()
        with torch.no_grad():
            full = score_batch(lm, prompts, [0, 1], prefix=prefix, capture=True)
            cut = score_batch(lm, prompts, [0, 1], prefix=prefix, capture=False, feed_label=False)
        lead = 0 if prefix is not None else len(prompts.bos_ids)
        assert fed == [lead + max(len(q.input_ids) for q in prompts.queries),
                       lead + max(q.n_input for q in prompts.queries)]
        assert fed[1] < fed[0]
        torch.testing.assert_close(cut.next_token_logprobs, full.next_token_logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(cut.candidate_logprobs, full.candidate_logprobs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="feed_label=True"):
        score_batch(lm, prompts, [0, 1], prefix=None, capture=True, feed_label=False)
