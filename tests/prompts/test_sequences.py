"""Sequences as the protocol builds them: true k, the prefix layout, pieces tokenised separately."""

import pytest

from iclgd.errors import UserError
from iclgd.models.tiny import tiny_model
from iclgd.prompts.sequences import PieceTokenizer, build_prompts, true_k


def test_true_k_strict_rule_and_first_misfit_ends_prefix():
    # prefix starts at 1 (BOS); demos of 5, 5, 2 (with SEP); longest eval 4; context 16.
    # 1+5+4=10 < 16 ok; 6+5+4=15 < 16 ok; 11+2+4=17 >= 16 stop.
    assert true_k([5, 5, 2], 1, 4, 16) == 2
    # strict: equality does not fit (1+5+4 = 10 >= 10)
    assert true_k([5, 1], 1, 4, 10) == 0
    # a later, shorter demo is not tried once one misfits
    assert true_k([3, 20, 1], 0, 1, 10) == 1


def _prompts(tokenizer, **kw):
    args = dict(
        demo_inputs=["Sentence: good film Label:", "Sentence: bad film Label:", "Sentence: fine Label:"],
        demo_labels=[1, 0, 1],
        eval_inputs=["Sentence: great Label:", "Sentence: awful plot Label:"],
        eval_labels=[1, 0],
        label_words=[" Negative", " Positive"],
        bos="eos_token",
        sep="\n",
        max_context=1024,
    )
    args.update(kw)
    return build_prompts(tokenizer, **args)


def test_prefix_layout_and_training_sequences():
    _, tokenizer = tiny_model("gpt2")
    p = _prompts(tokenizer)
    pieces = PieceTokenizer(tokenizer)
    bos = [tokenizer.eos_token_id]
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    negative, positive = pieces(" Negative"), pieces(" Positive")
    assert len(negative) == len(positive) == 1
    demo0 = pieces("Sentence: good film Label:") + positive
    demo1 = pieces("Sentence: bad film Label:") + negative
    assert p.demo_ids[:2] == [demo0, demo1]
    assert p.prefix_ids[: 1 + len(demo0) + len(sep)] == bos + demo0 + sep
    # demo positions cover exactly the demo tokens: no BOS, no separators
    assert [p.prefix_ids[i] for i in p.demo_positions] == [t for d in p.demo_ids for t in d]
    assert p.training_sequences()[1] == bos + demo1
    # a query is the test input with candidate 0 appended
    q = p.queries[0]
    assert q.input_ids == pieces("Sentence: great Label:") + negative
    assert q.prompt_end == q.n_input - 1


def test_reordered_keeps_tokens_and_moves_demos():
    _, tokenizer = tiny_model("gpt2")
    p = _prompts(tokenizer)
    r = p.reordered([2, 0, 1])
    assert r.demo_ids == [p.demo_ids[2], p.demo_ids[0], p.demo_ids[1]]
    assert r.demo_labels == [1, 1, 0]
    assert sorted(r.prefix_ids) == sorted(p.prefix_ids)
    assert [r.prefix_ids[i] for i in r.demo_positions] == [t for d in r.demo_ids for t in d]


def test_true_k_limits_prefix_to_context():
    _, tokenizer = tiny_model("gpt2")
    full = _prompts(tokenizer)
    demo_len = [len(d) + len(full.sep_ids) for d in full.demo_ids]
    longest = max(len(q.input_ids) for q in full.queries)
    # Dai's rule counts the eval sequence with its BOS: len(prefix) + len(demo) + (BOS + input + label) < context
    context = 1 + demo_len[0] + (1 + longest) + 1  # exactly one demo fits (strictly)
    p = _prompts(tokenizer, max_context=context)
    assert p.true_k == 1 and p.requested_k == 3
    with pytest.raises(UserError, match="no demonstration fits"):
        _prompts(tokenizer, max_context=context - 1)
    # Without BOS there is nothing to count twice.
    assert _prompts(tokenizer, bos=None, max_context=demo_len[0] + longest + 1).true_k == 1
    with pytest.raises(UserError, match="no demonstration fits"):
        _prompts(tokenizer, bos=None, max_context=demo_len[0] + longest)


def test_multi_token_label_word_is_refused_for_analysis():
    _, tokenizer = tiny_model("gpt2")
    with pytest.raises(UserError, match="one token"):
        _prompts(tokenizer, label_words=[" Negative", " Positivexyzq"])
    p = _prompts(tokenizer, label_words=[" Negative", " Positivexyzq"], single_token_labels=False)
    assert len(p.label_ids[1]) > 1


def test_sentencepiece_pieces_have_no_artificial_prefix():
    _, tokenizer = tiny_model("llama")
    pieces = PieceTokenizer(tokenizer)
    assert pieces.adds_dummy_prefix
    label = tokenizer.convert_ids_to_tokens(pieces(" Negative"))
    assert label == ["▁Negative"]
    # an input after a newline separator starts without "▁", as in natural text
    first = tokenizer.convert_ids_to_tokens(pieces("Sentence:"))[0]
    assert not first.startswith("▁")


def test_label_words_that_score_alike_or_are_unknown_are_refused():
    _, tokenizer = tiny_model("llama")  # SentencePiece-style with <unk> and byte fallback
    with pytest.raises(UserError, match="same token"):
        _prompts(tokenizer, label_words=[" Negative", " Negative "[:-1]], bos="bos_token")
    from transformers import AutoTokenizer

    from iclgd.models.offline import SHIPPED_MODELS

    DEMO_MODEL = SHIPPED_MODELS["icc-gpt2"]

    word_level = AutoTokenizer.from_pretrained(DEMO_MODEL)  # iclgd's own small LM: a word-level vocabulary
    with pytest.raises(UserError, match="unknown token"):
        _prompts(word_level, label_words=[" Negative", " Positive"], bos="bos_token", max_context=256)
