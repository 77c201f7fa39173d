import math

import pytest
import torch

from iclgd.metrics.output_distribution import (
    OUTPUT_METRICS,
    RunningOrderSpread,
    js_divergence,
    js_divergence_logprobs,
    kl_divergence,
    kl_divergence_logprobs,
    order_pair_reference,
    order_pair_reference_per_example,
    order_sensitivity,
    order_sensitivity_per_example,
    overlap_cosine,
    token_overlap,
)

P1 = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
P2 = torch.tensor([0.1, 0.4, 0.02, 0.08, 0.4])


def test_token_overlap_hand_computed():
    # top-2: {0, 1} and {1, 4} -> 1 shared; top-3: {0, 1, 2} and {1, 4, 0} -> 2 shared
    assert float(token_overlap(P1, P2, k=2)) == 0.5
    assert float(token_overlap(P1, P2, k=3)) == pytest.approx(2 / 3)
    assert float(token_overlap(P1, P1, k=3)) == 1.0


def test_overlap_cosine_hand_computed():
    # k=2: O = {1}; numerator 0.3*0.4; norms |(0.5,0.3)|, |(0.4,0.4)|
    expected = 0.3 * 0.4 / (math.hypot(0.5, 0.3) * math.hypot(0.4, 0.4))
    assert float(overlap_cosine(P1, P2, k=2)) == pytest.approx(expected)
    assert float(overlap_cosine(P1, P1, k=3)) == pytest.approx(1.0)
    assert float(overlap_cosine(torch.tensor([0.6, 0.4, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.3, 0.7]), k=2)) == 0.0


def test_kl_hand_computed_and_batched():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    assert float(kl_divergence(p, q)) == pytest.approx(math.log(2))  # 0 log 0 = 0
    assert math.isinf(float(kl_divergence(q, p)))
    batch = torch.stack([P1, P2])
    assert kl_divergence(batch, batch.flip(0)).shape == (2,)


def test_js_identities():
    assert float(js_divergence(P1, P1)) == pytest.approx(0.0, abs=1e-15)
    assert float(js_divergence(P1, P2)) == pytest.approx(float(js_divergence(P2, P1)), abs=1e-15)
    assert 0 < float(js_divergence(P1, P2)) <= math.log(2)
    disjoint = float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])))
    assert disjoint == pytest.approx(math.log(2))
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(100, 50, generator=g), -1)
    q = torch.softmax(3 * torch.randn(100, 50, generator=g), -1)
    js = js_divergence(p, q)
    assert bool((js <= math.log(2)).all()) and bool((js >= 0).all())


def test_order_sensitivity_hand_computed():
    # 2 orderings, 1 example: p = (0.6, 0.4) and (0.2, 0.8): population std per token 0.2 -> Sen = 0.4
    p = torch.tensor([[[0.6, 0.4]], [[0.2, 0.8]]])
    assert order_sensitivity(p) == pytest.approx(0.4)
    assert order_sensitivity(torch.stack([P1[None], P1[None], P1[None]])) == 0.0


def test_order_pair_reference_averages_all_ordered_pairs():
    p = torch.stack([P1[None], P2[None], P1[None]])
    # pairs (0,1),(1,0),(1,2),(2,1) give TO@2 = 0.5; (0,2),(2,0) give 1
    assert order_pair_reference(lambda a, b: token_overlap(a, b, 2), p) == pytest.approx((4 * 0.5 + 2 * 1) / 6)
    kl01, kl10 = float(kl_divergence(P1, P2)), float(kl_divergence(P2, P1))
    assert order_pair_reference(kl_divergence, p[:2]) == pytest.approx((kl01 + kl10) / 2)


def test_running_spread_equals_the_batch_sen_and_is_exactly_zero_for_equal_orderings():
    # the hand case above, accumulated one ordering at a time, in two batches of examples
    spread = RunningOrderSpread(2, 2)
    for p in ([[0.6, 0.4], [0.5, 0.5]], [[0.2, 0.8], [0.5, 0.5]]):
        p = torch.tensor(p)
        spread.add(torch.tensor([1]), p[1:])
        spread.add(torch.tensor([0]), p[:1])
    assert spread.per_example().tolist() == pytest.approx([0.4, 0.0])
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 3, 50, generator=g), -1)  # 5 orderings, 3 examples
    running = RunningOrderSpread(3, 50, dtype=torch.float64)
    for ordering in p:
        running.add(torch.arange(3), ordering)
    torch.testing.assert_close(running.per_example(), order_sensitivity_per_example(p))
    same = RunningOrderSpread(3, 50)
    for _ in range(4):
        same.add(torch.arange(3), p[0])
    assert same.per_example().tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="at least two orderings"):
        RunningOrderSpread(1, 2).per_example()


def test_per_example_pair_reference_and_the_unit_metrics():
    p = torch.stack([torch.stack([P1, P2]), torch.stack([P2, P2])])  # 2 orderings, 2 examples
    per_example = order_pair_reference_per_example(kl_divergence, p)
    kl12, kl21 = float(kl_divergence(P1, P2)), float(kl_divergence(P2, P1))
    assert per_example.tolist() == pytest.approx([(kl12 + kl21) / 2, 0.0])
    assert set(OUTPUT_METRICS) == {"to@10", "ocs@10", "kl", "js"}
    q = torch.log_softmax(torch.arange(20.0), -1)[None]  # the unit's metrics take log-probabilities
    assert float(OUTPUT_METRICS["to@10"](q, q)) == 1.0 and float(OUTPUT_METRICS["ocs@10"](q, q)) == pytest.approx(1.0)
    assert float(OUTPUT_METRICS["kl"](q, q)) == 0.0 and float(OUTPUT_METRICS["js"](q, q)) == 0.0


def test_kl_and_js_from_log_probabilities_equal_the_probability_forms_and_survive_underflow():
    """By hand: KL(P1 ‖ P2) from logs equals the probability form; a token at log-prob −900 under FT and −700 under
    ICL adds p1·200 ≈ 1e-302 (exp(−900) is 0 in float64, where the probability form gives inf)."""
    lp1, lp2 = P1.double().log(), P2.double().log()
    assert float(kl_divergence_logprobs(lp1, lp2)) == pytest.approx(float(kl_divergence(P1, P2)), rel=1e-12)
    assert float(js_divergence_logprobs(lp1, lp2)) == pytest.approx(float(js_divergence(P1, P2)), rel=1e-12)
    icl = torch.tensor([0.0, -700.0], dtype=torch.float64)  # [~1, e^-700]: not normalised beyond double precision
    ft = torch.tensor([0.0, -900.0], dtype=torch.float64)
    assert math.isinf(float(kl_divergence(icl.exp(), ft.exp())))
    kl = float(kl_divergence_logprobs(icl, ft))
    assert kl == pytest.approx(math.exp(-700) * 200, rel=1e-9) and kl > 0
    assert 0 <= float(js_divergence_logprobs(icl, ft)) < 1e-300
    below = torch.tensor([0.0, -800.0], dtype=torch.float64)  # p1(v) = exp(-800) is 0 in float64: no 0·inf NaN
    assert float(kl_divergence_logprobs(below, torch.tensor([0.0, float("-inf")], dtype=torch.float64))) == 0.0
    zero = torch.tensor([0.0, float("-inf")])  # p1(v) = 0 adds nothing, whatever p2(v) is
    assert float(kl_divergence_logprobs(zero, torch.tensor([-0.1, -2.4]))) == pytest.approx(0.1)
    assert float(kl_divergence_logprobs(torch.tensor([-0.1, -2.4]), zero)) == math.inf  # p2(v) = 0 < p1(v): inf
    for bad in (torch.tensor([0.0, float("nan")]), torch.tensor([float("inf"), 0.0]),
                torch.tensor([float("-inf"), float("-inf")])):
        with pytest.raises(ValueError, match="not a log-probability distribution"):
            kl_divergence_logprobs(bad, zero)
    with pytest.raises(ValueError, match="one shape"):
        js_divergence_logprobs(lp1, lp2[:3])


def test_one_ordering_has_no_order_sensitivity_and_js_names_its_arguments():
    """One ordering has no spread: an error, not a 0 that reads as order-invariant (as the running spread and the
    ICL-vs-ICL reference say); JS names its own arguments when their shapes differ."""
    with pytest.raises(ValueError, match="at least two orderings"):
        order_sensitivity(P1[None, None])
    with pytest.raises(ValueError, match=r"p1 \[3, 4\] and p2 \[4\]"):
        js_divergence(torch.rand(3, 4), torch.rand(4))


@pytest.mark.parametrize("metric", [token_overlap, overlap_cosine, kl_divergence, js_divergence])
def test_logits_nan_or_an_empty_row_are_refused_rather_than_giving_nan(metric):
    p = torch.tensor([[0.5, 0.3, 0.2]])
    for bad in (torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[float("nan"), 0.5, 0.5]]), torch.zeros(1, 3)):
        with pytest.raises(ValueError, match="p2 is not a probability distribution"):
            metric(p, bad, **({"k": 2} if metric in (token_overlap, overlap_cosine) else {}))
