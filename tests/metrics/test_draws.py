"""Per-example random draws: a function of (seed, example, stream) only, so baselines ignore batching."""

import torch

from iclgd.metrics.draws import example_seed, uniform_per_example


def test_draws_depend_only_on_seed_example_and_stream():
    whole = uniform_per_example(3, range(6), (2, 4), "simaou_random")
    parts = torch.cat([uniform_per_example(3, [0, 1], (2, 4), "simaou_random"),
                       uniform_per_example(3, [2, 3, 4, 5], (2, 4), "simaou_random")])
    assert whole.shape == (6, 2, 4) and whole.dtype == torch.float64
    assert torch.equal(whole, parts)
    assert torch.equal(uniform_per_example(3, [4, 1], (2, 4), "simaou_random"), whole[[4, 1]])
    assert not torch.equal(whole, uniform_per_example(4, range(6), (2, 4), "simaou_random"))
    assert not torch.equal(whole, uniform_per_example(3, range(6), (2, 4), "kendall_random"))
    assert bool(((whole >= 0) & (whole < 1)).all())


def test_example_seed_is_stable_across_processes():
    # sha256-derived, not Python's salted hash(): a fixed value forever.
    assert example_seed(1, 0, "simaou_random") == 6139834605964016882
    assert uniform_per_example(0, [], (3,), "x").shape == (0, 3)
