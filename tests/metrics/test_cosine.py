import math

import pytest
import torch

from iclgd.metrics.cosine import average_cosines, cosine, layer_average


def test_hand_computed_cosines():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [-3.0, -4.0], [-2.0, 1.0]])
    result = cosine(a, b)
    assert torch.allclose(result.values, torch.tensor([1 / math.sqrt(2), -1.0, 0.0], dtype=torch.float64))
    assert result.zero_count == 0


def test_zero_vector_gives_zero_not_nan_and_is_counted():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    result = cosine(a, b)
    assert not torch.isnan(result.values).any()
    assert result.values.tolist() == [0.0, 0.0, 0.0]
    assert result.zero.tolist() == [True, True, True]
    assert result.zero_count == 3


def test_difference_below_relative_tolerance_counts_as_zero():
    reference = torch.tensor([[1000.0, 0.0], [1000.0, 0.0]])
    tiny = torch.tensor([[1e-4, 0.0], [1e-2, 0.0]])  # 1e-7 and 1e-5 of |reference|
    other = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    result = cosine(tiny, other, reference=reference)
    assert result.values.tolist() == [0.0, 1.0]
    assert result.zero.tolist() == [True, False]


def test_batched_shapes_and_uniform_averages():
    torch.manual_seed(0)
    a, b = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    result = cosine(a, b)
    assert result.values.shape == (3, 2, 4)
    expected = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    assert torch.allclose(result.values, expected)
    avg = average_cosines(result)
    assert avg.per_example.shape == (3, 2)
    assert len(avg.per_layer) == 2
    assert math.isclose(avg.mean, float(expected.mean()), rel_tol=1e-12)


def test_layer_average_hand_computed():
    # N=2 examples, L=2 layers, H=2 heads.
    values = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 0.0], [1.0, 0.0]]])
    zero = torch.tensor([[[False, True], [False, False]], [[True, True], [False, True]]])
    avg = layer_average(values, zero)
    assert avg.per_example.tolist() == [[0.5, 0.5], [0.0, 0.5]]
    assert avg.per_layer == [0.25, 0.5]
    assert avg.mean == 0.375
    assert avg.zero_per_layer == [3, 1]
    assert avg.zero_per_example.tolist() == [[1, 0], [2, 1]]
    assert avg.zero_count == 4


def test_nan_inputs_mismatched_shapes_and_empty_averages_are_errors_not_nan():
    a = torch.tensor([[1.0, 2.0]])
    with pytest.raises(ValueError, match="b holds NaN or inf"):
        cosine(a, torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="reference holds NaN or inf"):
        cosine(a, a, reference=torch.tensor([[float("inf"), 1.0]]))
    with pytest.raises(ValueError, match=r"one shape, got a \[1, 2\], b \[1, 3\]"):
        cosine(a, torch.ones(1, 3))
    with pytest.raises(ValueError, match="no examples or no layers"):
        layer_average(torch.zeros(0, 3))
