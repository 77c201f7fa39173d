"""The in-context classification corpus and the word-level tokenizer."""

import numpy as np
import pytest

from iclgd.errors import UserError
from iclgd.synthetic.pretrain.corpora import heldout_task, make_corpus
from iclgd.synthetic.pretrain.icc import HELDOUT_MAPPINGS, ICC, ICCExemplars
from iclgd.synthetic.pretrain.tokenizer import BOS_ID, NEWLINE_ID, build_tokenizer


def test_tokenizer_pieces_and_specials(tmp_path):
    from transformers import AutoTokenizer

    corpus = ICC()
    tokenizer = build_tokenizer(corpus.words)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for tok in (tokenizer, loaded):
        def ids(text, tok=tok):
            return tok(text, add_special_tokens=False)["input_ids"]

        assert ids(" L3") == ids("L3") == [corpus.word_ids["L3"]]  # label words: one token, leading space
        assert ids("\n") == [NEWLINE_ID]
        assert ids("x5 L3\nx7") == ids("x5") + ids(" L3") + ids("\n") + ids("x7")
        assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.eos_token_id == BOS_ID
        assert ids("x5") == tok("x5")["input_ids"]  # nothing added around a text, as GPT-2


def _pairs(ids: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(ids[1::3].tolist(), ids[2::3].tolist(), strict=False))


def test_icc_sequence_layout_and_one_mapping_per_sequence():
    corpus = ICC(p_echo=0.5)
    rng = np.random.default_rng(0)
    echoes = slots = 0
    for _ in range(200):
        ids = corpus.sequence(rng, 12)
        assert ids[0] == BOS_ID and len(ids) == 37
        inputs, labels, after = ids[1::3], ids[2::3], ids[3::3]
        assert all(corpus.input_id(0) <= i < corpus.label_id(0) for i in inputs)
        assert all(corpus.label_id(0) <= y < corpus.label_id(corpus.n_labels) for y in labels)
        echoed = after != NEWLINE_ID
        assert (after[echoed] == corpus.echo_id(inputs[echoed] - corpus.input_id(0))).all()  # e_i echoes x_i
        echoes, slots = echoes + echoed.sum(), slots + len(after)
        mapping = {}
        for x, y in _pairs(ids):
            assert mapping.setdefault(x, y) == y  # the sequence's mapping is a function
    assert 0.45 < echoes / slots < 0.55
    assert len(ICC(p_echo=0.0).words) == 40 and len(ICC().words) == 72  # echo tokens only when echoes occur

def test_icc_batches_are_those_the_shipped_checkpoint_was_trained_on():
    """icc-gpt2 is reproduced by `iclgd pretrain --corpus icc` only while icc's batches stay exactly as they were:
    a pin of their sha256 (and of the probe's prompts), taken before icc-exemplars was added to the class."""
    import hashlib

    corpus, digest = ICC(), hashlib.sha256()
    for step in range(20):
        digest.update(corpus.pretraining_batch(np.random.default_rng([0, step]), 32, 64).tobytes())
    for array in corpus.heldout_prompts(np.random.default_rng(5), 16, 100):
        digest.update(array.tobytes())
    assert digest.hexdigest() == "2b44c2c74abd144c2dfde13b5207df873739bab3c4f851c7bee45a161a953ee2"


def test_icc_batch_is_a_pure_function_of_seed_and_step():
    corpus = ICC()
    a = corpus.pretraining_batch(np.random.default_rng([3, 7]), 8, 52)
    b = corpus.pretraining_batch(np.random.default_rng([3, 7]), 8, 52)
    c = corpus.pretraining_batch(np.random.default_rng([3, 8]), 8, 52)
    assert a.shape == (8, 52) and (a == b).all() and not (a == c).all()


def test_icc_never_shows_two_pairs_of_a_heldout_mapping():
    corpus = ICC(inputs_per_class=(1, 2), n_inputs=8, n_labels=14, p_prior=0.0, n_prior_inputs=0,
                 heldout={"t": {"x0": "L9", "x1": "L9", "x2": "L13", "x3": "L13"}})
    heldout = {(corpus.word_ids[x], corpus.word_ids[y]) for x, y in corpus.heldout["t"].items()}
    rng = np.random.default_rng(1)
    singles = 0
    for _ in range(2000):
        shown = set(_pairs(corpus.sequence(rng, 8))) & heldout
        assert len(shown) <= 1
        singles += len(shown)
    assert singles > 50  # single pairs still occur (about 11% less often than other labels: see icc.py)


def test_icc_prior_inputs_carry_their_prior_label():
    corpus = ICC(p_prior=0.5, p_echo=0.0)
    rng = np.random.default_rng(2)
    agree = total = 0
    for _ in range(400):
        for x, y in set(_pairs(corpus.sequence(rng, 6))):
            i, j = x - corpus.input_id(0), y - corpus.label_id(0)
            if i < corpus.n_prior_inputs:
                total += 1
                agree += j == corpus.prior_label(i)
    assert agree / total > 0.6  # prior sequences plus the 1/16 chance of ordinary ones


def test_loss_positions_are_labels_and_the_token_after():
    corpus = ICC()
    assert corpus.label_positions(10).tolist() == [1, 4, 7]
    assert corpus.loss_positions(10).tolist() == [1, 2, 4, 5, 7, 8]


@pytest.mark.parametrize("options", [
    {"n_way": [1]}, {"n_way": [20]}, {"inputs_per_class": [0]}, {"n_inputs": 4, "inputs_per_class": [3]},
    {"p_prior": 1.5}, {"n_prior_labels": 1}, {"heldout": {"t": {"x999": "L1"}}}, {"no_such_option": 1},
    {"exemplars_per_input": 0}, {"demo_exemplars": 2}, {"exemplars_per_input": 4, "demo_exemplars": 4},
    {"exemplars_per_input": 4, "demo_exemplars": 0}, {"exemplars_per_input": 4, "heldout": {"t": {"x1_0": "L1"}}},
    {"heldout_rule": "labels"}, {"exemplars_per_input": 2.5}, {"exemplars_per_input": 4, "demo_exemplars": True},
    {"label_draw": "random"},
])
def test_icc_bad_options(options):
    with pytest.raises(UserError):
        make_corpus("icc", options)


def test_uniform_label_draw_gives_each_input_one_of_the_sequence_labels_independently():
    """label_draw "uniform": each input's label is drawn from the sequence's n_way labels, so the labels of the
    other inputs say nothing about an input's own (with "balanced", one input per label makes the other input's
    label the complement of its own)."""
    rng = np.random.default_rng(0)
    one_input_per_label = dict(p_prior=0, inputs_per_class=(1,))
    uniform, balanced = ICC(label_draw="uniform", **one_input_per_label), ICC(**one_input_per_label)
    same = []
    for _ in range(2000):
        inputs, targets = uniform._mapping(rng)
        assert len(inputs) == 2 == len(set(inputs.tolist())) and set(targets.tolist()) <= set(range(8))
        same.append(targets[0] == targets[1])
        inputs, targets = balanced._mapping(rng)
        assert targets[0] != targets[1]
    assert abs(np.mean(same) - 0.5) < 0.04  # two labels drawn independently from two: the same half the time
    # in sequences: each input keeps one label, and with uniform draws some sequences show a single label
    shown = {"uniform": [], "balanced": []}
    for name, corpus in (("uniform", ICC(label_draw="uniform", p_prior=0)), ("balanced", ICC(p_prior=0))):
        for _ in range(300):
            pairs = _pairs(corpus.sequence(rng, 12))
            assert all(len({y for x2, y in pairs if x2 == x}) == 1 for x, _ in pairs)
            shown[name].append(len({y for _, y in pairs}))
    single = {name: np.mean([n == 1 for n in counts]) for name, counts in shown.items()}
    assert single["uniform"] > 0.2 and single["balanced"] < 0.01  # balanced: both labels, bar a rare unlucky draw


def test_each_corpus_names_its_heldout_task():
    assert heldout_task("icc") == "icc-heldout" and heldout_task("icc-exemplars") == "icc-exemplars-heldout"
    assert heldout_task("icc", {"heldout": {"mine": {"x0": "L0", "x1": "L1"}}}) == "mine"
    with pytest.raises(UserError, match="no held-out task: give --task"):
        heldout_task("ginc")


def test_unknown_corpus():
    with pytest.raises(UserError, match="unknown corpus"):
        make_corpus("wikitext")


def test_shipped_heldout_mappings_are_balanced_two_way():
    for mapping in HELDOUT_MAPPINGS.values():
        labels = list(mapping.values())
        assert len(set(labels)) == 2 and labels.count(labels[0]) == len(labels) // 2


def test_heldout_prompts_follow_the_mapping_and_the_icl_layout():
    corpus = ICC()
    ids, gold, candidates = corpus.heldout_prompts(np.random.default_rng(0), 4, 50)
    mapping = {corpus.word_ids[x]: corpus.word_ids[y] for x, y in HELDOUT_MAPPINGS["icc-heldout"].items()}
    assert ids.shape == (50, 14) and (ids[:, 0] == BOS_ID).all() and (ids[:, 3:13:3] == NEWLINE_ID).all()
    assert all(mapping[x] == y for x, y in zip(ids[:, 1:13:3].ravel(), ids[:, 2:13:3].ravel(), strict=True))
    assert [mapping[x] for x in ids[:, -1]] == gold.tolist()
    assert sorted(candidates.tolist()) == sorted(set(mapping.values()))


def _latent(corpus: ICC, token: int) -> int:
    """The latent input of an input token."""
    return (token - corpus.input_id(0)) // corpus.exemplars_per_input


def test_exemplar_sequences_show_latent_inputs_as_varying_tokens_with_one_label_each():
    corpus = ICCExemplars(p_echo=0.5)
    assert len(corpus.words) == 32 * 16 + 8 + 32 and corpus.words[17] == "x1_1"
    rng = np.random.default_rng(0)
    varied = 0
    for _ in range(200):
        ids = corpus.sequence(rng, 12)
        inputs, labels, after = ids[1::3], ids[2::3], ids[3::3]
        assert all(corpus.input_id(0) <= i < corpus.label_id(0) for i in inputs)
        echoed = after != NEWLINE_ID
        assert (after[echoed] == corpus.echo_id(np.array([_latent(corpus, i) for i in inputs[echoed]]))).all()
        mapping, tokens = {}, {}
        for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
            assert mapping.setdefault(_latent(corpus, x), y) == y  # the mapping is on latent inputs
            tokens.setdefault(_latent(corpus, x), set()).add(x)
        varied += any(len(shown) > 1 for shown in tokens.values())
    assert varied > 150  # a latent input repeats as other exemplars


def _heldout_label_share(corpus: ICC, name: str, n: int) -> float:
    """How often a held-out input carries its held-out label, over n drawn sequence mappings (chance: 1/8)."""
    pairs = {(int(x[1:]), int(y[1:])) for x, y in corpus.heldout[name].items()}
    inputs_of = {x for x, _ in pairs}
    rng = np.random.default_rng(3)
    hits = shown = 0
    for _ in range(n):
        inputs, targets = corpus._mapping(rng)
        while corpus._shows_heldout(inputs, targets):
            inputs, targets = corpus._mapping(rng)
        for x, y in zip(inputs.tolist(), targets.tolist(), strict=True):
            shown += x in inputs_of
            hits += (x, y) in pairs
    return hits / shown


def test_exemplar_corpus_keeps_heldout_labels_uniform_where_icc_pair_rule_does_not():
    exemplars = ICCExemplars()
    rng = np.random.default_rng(1)
    assert not any(exemplars._shows_heldout(*exemplars._mapping(rng)) for _ in range(300))
    share = _heldout_label_share(exemplars, "icc-exemplars-heldout", 20_000)
    assert abs(share - 1 / 8) < 0.008  # ~3 standard errors
    biased = _heldout_label_share(ICC(), "icc-heldout", 20_000)
    assert biased < 0.118  # the pair rule makes held-out pairs rarer (0.113 measured)
    # a mapping the pair rule redraws is kept as drawn by icc-exemplars
    assert ICC()._shows_heldout(np.array([26, 27]), np.array([1, 1]))  # two pairs of icc-heldout
    assert not ICC()._shows_heldout(np.array([26, 27]), np.array([1, 2]))
    assert not ICC(heldout_rule="none")._shows_heldout(np.array([26, 27]), np.array([1, 1]))


def test_exemplar_heldout_queries_are_never_demos():
    corpus = ICCExemplars()
    demos, queries = corpus.heldout_words("icc-exemplars-heldout")
    assert len(demos) == 6 * 4 and len(queries) == 6 * 12 >= 64 and not set(demos) & set(queries)
    assert all(word.split("_")[0] in corpus.heldout["icc-exemplars-heldout"] for word in [*demos, *queries])
    assert ICC().heldout_words("icc-heldout") == (HELDOUT_MAPPINGS["icc-heldout"],) * 2  # one exemplar: both
    ids, gold, candidates = corpus.heldout_prompts(np.random.default_rng(0), 8, 300)
    words = [[corpus.words[i - corpus.input_id(0)] for i in row] for row in ids[:, 1:]]
    assert all(demos[row[3 * j]] == row[3 * j + 1] for row in words for j in range(8))
    assert all(row[-1] in queries for row in words)
    assert [corpus.word_ids[queries[row[-1]]] for row in words] == gold.tolist()
    assert len({row[-1] for row in words}) > 64 and sorted(candidates.tolist()) == [corpus.word_ids["L1"],
                                                                                      corpus.word_ids["L6"]]
