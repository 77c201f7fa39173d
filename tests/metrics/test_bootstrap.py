"""Bootstrap CIs: seeded, around the mean, exact on constants, shrinking with more examples."""

import math

import pytest
import torch

from iclgd.metrics.bootstrap import bootstrap_ci, bootstrap_ratio_ci


def test_constant_values_give_a_point_interval_and_nan_for_no_examples():
    low, high = bootstrap_ci(torch.full((5, 3), 0.25), seed=1, stream="x")
    assert torch.equal(low, torch.full((3,), 0.25, dtype=torch.float64)) and torch.equal(low, high)
    low, high = bootstrap_ci(torch.empty(0, 2), seed=1, stream="x")
    assert low.shape == (2,) and bool(low.isnan().all())


def test_interval_is_seeded_contains_the_mean_and_matches_the_normal_approximation():
    values = torch.rand(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low, high = bootstrap_ci(values, seed=3, stream="acc")
    again = bootstrap_ci(values, seed=3, stream="acc")
    assert torch.equal(low, again[0]) and torch.equal(high, again[1])
    assert not torch.equal(low, bootstrap_ci(values, seed=4, stream="acc")[0])
    mean, sem = float(values.mean()), float(values.std() / math.sqrt(len(values)))
    assert float(low) < mean < float(high)
    # the 95% percentile interval of a mean of 400 iid values is close to mean ± 1.96 sem
    assert abs((float(high) - float(low)) / (2 * 1.96 * sem) - 1) < 0.15


def test_bernoulli_accuracy_interval_and_per_column_layers():
    correct = torch.tensor([1.0] * 75 + [0.0] * 25)  # accuracy 0.75 on 100 examples
    low, high = bootstrap_ci(correct, seed=0, stream="accuracy")
    assert 0.64 < float(low) < 0.70 and 0.80 < float(high) < 0.85
    per_layer = torch.stack([correct, torch.ones(100)], dim=1)  # [N, L]
    low, high = bootstrap_ci(per_layer, seed=0, stream="accuracy")
    assert low.shape == (2,) and float(low[1]) == 1.0 == float(high[1])


def test_ratio_interval_for_rec2ftp_like_counts():
    from iclgd.metrics.bootstrap import bootstrap_ratio_ci

    fixes = torch.tensor([1.0] * 40 + [0.0] * 60)  # the denominator: 40 examples FT fixed
    both = torch.tensor([1.0] * 30 + [0.0] * 70)  # of which ICL fixed 30: ratio 0.75
    low, high = bootstrap_ratio_ci(both, fixes, seed=0, stream="rec2ftp")
    assert 0.6 < low < 0.75 < high < 0.9
    assert all(math.isnan(v) for v in bootstrap_ratio_ci(torch.zeros(5), torch.zeros(5), seed=0, stream="r"))


def test_cluster_bootstrap_carries_the_spread_between_groups():
    """Two groups with no spread inside each: pooling the examples gives an interval as narrow as a point, the
    two-stage bootstrap one spanning both group means; one group alone gives its own bootstrap's range."""
    from iclgd.metrics import cluster_bootstrap_ci

    groups = [torch.full((50,), 0.0), torch.full((50,), 1.0)]
    mean, low, high = cluster_bootstrap_ci(groups, 1, "s")
    assert mean == 0.5 and low == 0.0 and high == 1.0  # resampled groups: both 0, mixed, or both 1
    one = torch.tensor([0.0, 1.0, 2.0, 3.0])
    mean, low, high = cluster_bootstrap_ci([one], 1, "s")
    assert mean == 1.5 and 0.0 <= low < 1.5 < high <= 3.0
    assert cluster_bootstrap_ci([one], 1, "s") == (mean, low, high)  # seeded
    assert all(math.isnan(v) for v in cluster_bootstrap_ci([], 1, "s"))


def test_a_level_in_percent_or_mismatched_counts_are_errors():
    with pytest.raises(ValueError, match=r"level is a fraction in \(0, 1\)"):
        bootstrap_ci(torch.ones(3), 0, "x", level=95)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        bootstrap_ci(torch.ones(3), 0, "x", resamples=0)
    with pytest.raises(ValueError, match="one count per example"):
        bootstrap_ratio_ci(torch.ones(3), torch.ones(4), 0, "x")
    low, high = bootstrap_ci([1.0, 1.0], 0, "x")  # a list is read as a tensor
    assert float(low) == float(high) == 1.0


def test_the_cluster_bootstrap_checks_its_settings_too():
    from iclgd.metrics.bootstrap import cluster_bootstrap_ci

    with pytest.raises(ValueError, match="level is a fraction"):
        cluster_bootstrap_ci([torch.ones(2), torch.ones(3)], 0, "x", level=95)
