"""GINC (Xie et al. 2022) and in-context Markov chains: the generators against hand-computed cases."""

from itertools import product

import numpy as np
import pytest

from iclgd.errors import UserError
from iclgd.synthetic.pretrain.ginc import GINC, letter_strings, permutation_mixture, softmax
from iclgd.synthetic.pretrain.markov import MarkovChains
from iclgd.synthetic.pretrain.tokenizer import BOS_ID, FIRST_WORD_ID


def test_letter_strings_follow_the_published_order():
    # the code's letter_generator: 1-letter strings, then 2-letter permutations in itertools order
    assert letter_strings(28) == [*"abcdefghijklmnopqrstuvwxyz", "ab", "ac"]
    world = GINC()
    assert world.symbols[0] == "/" and len(world.symbols) == 50 and world.symbols[-1] == "ax"


def test_softmax_and_permutation_mixture_are_stochastic():
    assert softmax(np.array([0.0, np.log(3.0)]), 1.0) == pytest.approx([0.25, 0.75])
    mixture = permutation_mixture(np.random.default_rng(0), 5, 0.1)
    assert np.allclose(mixture.sum(0), 1) and np.allclose(mixture.sum(1), 1)  # doubly stochastic


def test_ginc_world_structure():
    world = GINC()
    assert len(world.concepts) == 10 and world.n_train_concepts == 5
    emission = world.emission.reshape(world.n_values, world.n_slots)
    assert (emission[:, 0] == 0).all() and (emission[:, 1:] > 0).all()  # slot 0 emits the delimiter only
    for concept in world.concepts:
        assert np.allclose(concept.transition.sum(1), 1) and np.isclose(concept.start.sum(), 1)
    # T[(v, s), (v', s')] = A_value[v, v'] A_slot[s, s']: every block is a multiple of one slot matrix
    t = world.concepts[0].transition
    block = t[: world.n_slots, : world.n_slots]
    other = t[world.n_slots: 2 * world.n_slots, 3 * world.n_slots: 4 * world.n_slots]
    ratio = other.sum() / block.sum()
    assert np.allclose(other, ratio * block)
    # the value matrix is shared by all concepts, the slot matrices are not
    assert not np.allclose(world.concepts[0].transition, world.concepts[1].transition)
    assert np.allclose(GINC().emission, world.emission)  # the world is fixed by world_seed


def test_ginc_value_matrix_is_shared_and_identity_biased_and_start_is_near_uniform():
    world = GINC()
    nv, ns = world.n_values, world.n_slots
    values = []
    for concept in world.concepts:
        t = concept.transition.reshape(nv, ns, nv, ns)  # [v, s, v', s']
        value = t[:, 0, :, :].sum(axis=2)  # A_value[v, v'] = Σ_s' A_value[v, v'] A_slot[0, s'] (slot rows sum to 1)
        slot = t[0, :, 0, :] / value[0, 0]
        assert np.allclose(concept.transition, np.kron(value, slot))  # the code's combine_transmats(slot, value)
        assert (np.diag(value) >= world.value_identity_coeff - 1e-12).all()  # (1 - vic) mixture + vic I
        values.append(value)
        # softmax((u - 0.5) / 10), u in [0, 1): no two start probabilities differ by more than a factor e^(1/10)
        assert concept.start.max() / concept.start.min() <= np.exp(1 / world.start_temp)
    assert all(np.allclose(values[0], v) for v in values)  # one value matrix for every concept


def test_ginc_prompt_examples_start_at_the_start_slot():
    world = GINC()
    first_symbols = set(world.emission.reshape(world.n_values, world.n_slots)[:, 2])  # all_values[:, s0]
    for bayes in (False, True):
        for row in world.prompt_rows(1, 2, 4, 50, seed=5, bayes_label=bayes):
            x = [world.symbols.index(s) for s in row["text"].split()]
            assert len(x) == 3 and x[0] in first_symbols
            probs = world.next_symbol_probs(1, 2, x)
            y = world.symbols.index(row["label"])
            assert probs[y] > 0 and (not bayes or y == int(np.argmax(probs)))


def test_ginc_pretraining_batch_follows_the_chain():
    world = GINC()
    ids = world.pretraining_batch(np.random.default_rng(0), 4, 60)
    assert ids.shape == (4, 60) and (ids[:, 0] == BOS_ID).all() and (ids[:, 1:] >= FIRST_WORD_ID).all()
    again = world.pretraining_batch(np.random.default_rng(0), 4, 60)
    assert (ids == again).all()


def test_ginc_bayes_label_matches_brute_force_enumeration():
    world = GINC(n_symbols=6, n_values=2, n_slots=3, n_hmms=2)
    concept, slot, x = 0, 1, None
    rows = world.prompt_rows(concept, slot, prompt_length=3, n=20, seed=0, bayes_label=False)
    x = [world.symbols.index(s) for s in rows[0]["text"].split()]
    t = world.concepts[concept].transition
    starts = [v * world.n_slots + slot for v in range(world.n_values)]
    probs = np.zeros(world.n_symbols)
    for path in product(range(world.n_hidden), repeat=len(x) + 1):  # h_0 .. h_len(x)
        if path[0] not in starts:
            continue
        weight = 1 / len(starts)
        for a, b in zip(path[:-1], path[1:], strict=False):
            weight *= t[a, b]
        if all(world.emission[h] == s for h, s in zip(path[:-1], x, strict=True)):
            probs[world.emission[path[-1]]] += weight
    probs /= probs.sum()
    assert world.next_symbol_probs(concept, slot, x) == pytest.approx(probs)


def test_ginc_prompt_rows():
    world = GINC()
    rows = world.prompt_rows(0, 1, 5, 30, seed=3, bayes_label=True)
    assert all(len(r["text"].split()) == 4 for r in rows) and all(r["label"] in world.symbols for r in rows)
    assert rows == world.prompt_rows(0, 1, 5, 30, seed=3, bayes_label=True)
    with pytest.raises(UserError):
        world.prompt_rows(0, 0, 5, 3, seed=0, bayes_label=True)  # slot 0 is the delimiter


def test_markov_bayes_predictor_is_the_smoothed_bigram_count():
    chains = MarkovChains(n_states=3, alpha=1.0)
    states = np.array([[0, 1, 0, 1, 0]])
    probs = chains.bayes_next(states)
    assert probs[0, 0] == pytest.approx([1 / 3, 1 / 3, 1 / 3])  # no transition seen yet
    assert probs[0, 2] == pytest.approx([1 / 4, 2 / 4, 1 / 4])  # after 0 -> 1 once
    assert probs[0, 4] == pytest.approx([1 / 5, 3 / 5, 1 / 5])  # 0 -> 1 twice
    assert probs[0, 3] == pytest.approx([2 / 4, 1 / 4, 1 / 4])  # 1 -> 0 once


def test_markov_batch_and_bad_options():
    chains = MarkovChains()
    ids = chains.pretraining_batch(np.random.default_rng(1), 3, 20)
    assert ids.shape == (3, 20) and (ids[:, 0] == BOS_ID).all()
    assert set(np.unique(ids[:, 1:])) <= set(range(FIRST_WORD_ID, FIRST_WORD_ID + 3))
    with pytest.raises(UserError):
        MarkovChains(n_states=1)
