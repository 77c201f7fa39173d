"""Shen et al.'s order critique: which predictors are exactly invariant to the context order (spec §1)."""

import pytest
import torch

from iclgd.synthetic.linreg.baselines import gd_plus_plus_predict, gd_predict, online_sgd_predict
from iclgd.synthetic.linreg.construction import hand_built_gd, hand_built_gd_plus_plus
from iclgd.synthetic.linreg.critique import INVARIANCE_TOLERANCE, expected_invariant, order_row, orderings
from iclgd.synthetic.linreg.lsa import LSA


def _random_lsa(layers, **options):
    model = LSA(4, 1, 6, layers=layers, dtype=torch.float64, **options)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3, generator=gen)
    return lambda tasks: model(tasks.x, tasks.y, tasks.x_query)


@pytest.fixture
def orders():
    return orderings(6, 6, seed=5)


LSA_CASES = [  # (layers, causal_mask, positional_encoding)
    (1, False, False), (1, True, False), (2, False, False), (3, False, False),  # invariant
    (1, False, True), (2, False, True), (2, True, False), (3, True, False),  # order-sensitive
]


@pytest.mark.parametrize("layers,causal_mask,positional_encoding", LSA_CASES)
def test_lsa_order_sensitivity_follows_the_rule(tasks64, orders, layers, causal_mask, positional_encoding):
    predict = _random_lsa(layers, causal_mask=causal_mask, positional_encoding=positional_encoding, pe_size=4)
    row = order_row("lsa", "lsa", predict, tasks64, orders, layers, causal_mask, positional_encoding)
    invariant = expected_invariant("lsa", layers, causal_mask, positional_encoding)
    assert row["expected"] == ("invariant" if invariant else "sensitive")
    if invariant:
        assert row["relative_sensitivity"] < 1e-12
    else:
        assert row["relative_sensitivity"] > 1e-4
    assert row["observed"] == row["expected"]


def test_algorithms_order_sensitivity(tasks64, orders):
    gd = order_row("gd", "gd", lambda t: gd_predict(t, 2.0, 3), tasks64, orders, 3)
    built = hand_built_gd(4, 1, 6, eta=2.0, steps=3)
    hand = order_row("hand", "hand-built", lambda t: built(t.x, t.y, t.x_query), tasks64, orders, 3)
    plus = hand_built_gd_plus_plus(4, 1, 6, [2.0, 1.0], [0.5, 0.1])
    gd_plus_plus = order_row("gd++", "hand-built", lambda t: plus(t.x, t.y, t.x_query), tasks64, orders, 2)
    sgd = order_row("sgd", "online-sgd", lambda t: online_sgd_predict(t, 0.3), tasks64, orders)
    for row in (gd, hand, gd_plus_plus):
        assert row["relative_sensitivity"] < 1e-12 and row["expected"] == row["observed"] == "invariant"
    assert sgd["relative_sensitivity"] > 1e-4 and sgd["expected"] == sgd["observed"] == "sensitive"
    assert INVARIANCE_TOLERANCE > 1e-12
    # the weight-space GD++ is invariant too
    assert order_row("w", "gd", lambda t: gd_plus_plus_predict(t, [2.0], [0.5]), tasks64, orders)["sensitivity"] < 1e-12


def test_orderings_are_seeded_permutations():
    first, again = orderings(10, 5, seed=1), orderings(10, 5, seed=1)
    assert torch.equal(first[0], torch.arange(10))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(sorted(order.tolist()) == list(range(10)) for order in first)
    assert len({tuple(order.tolist()) for order in first}) == 5


def test_a_diverged_order_variant_says_what_to_change(tmp_path):
    """An order-table variant takes its depth's own lr, not the run's: its divergence names the variant and the
    config field that leaves it out, not --lr, which critique does not take."""
    from iclgd.errors import UserError
    from iclgd.synthetic.linreg.config import CritiqueConfig, TrainConfig
    from iclgd.synthetic.linreg.critique import order_experiment
    from iclgd.synthetic.linreg.train import build_model

    run = TrainConfig(steps=5, batch_size=8, lr=1e-6, eval_tasks=10, eval_every=5, d=2, n_context=3,
                      weight_scale=1e25)  # data this large diverges at the variant's own lr
    critique = CritiqueConfig(run=str(tmp_path), order_depths=[1], variant_steps=3, orderings=2, order_tasks=4)
    with pytest.raises(UserError, match=r"diverged at step \d+ .* at lr 0.001: that is the order table's variant "
                                        r"LSA 1L, which takes its depth's own lr.*leave its depth out of order_depths"):
        order_experiment(run, build_model(run), 0.1, critique, progress=False)


def test_a_predictor_of_zeros_is_order_invariant_not_a_crash(tasks64, orders):
    row = order_row("zeros", "gd", lambda tasks: torch.zeros_like(tasks.y_query), tasks64, orders)
    assert (row["sensitivity"], row["relative_sensitivity"], row["observed"]) == (0.0, 0.0, "invariant")
