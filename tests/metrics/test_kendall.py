import math

import pytest
import torch
from scipy.stats import kendalltau

from iclgd.metrics.kendall import check_same_demo_tokens, ft_demo_logits, kendall, kendall_random


def test_ft_demo_logits_is_the_per_layer_matrix_product():
    g = torch.Generator().manual_seed(0)
    q_test, q_train = torch.randn(3, 2, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    m_ft = ft_demo_logits(q_test, q_train)
    assert m_ft.shape == (3, 2, 5)
    for n in range(3):
        for l in range(2):
            for j in range(5):
                assert torch.allclose(m_ft[n, l, j], q_test[n, l] @ q_train[l, j])


def test_kendall_hand_computed():
    # (1,2,3) vs (1,3,2): 2 concordant, 1 discordant pair -> tau = 1/3; reversed -> -1.
    m_icl = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])
    m_ft = torch.tensor([[[1.0, 3.0, 2.0], [3.0, 2.0, 1.0]], [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]])
    result = kendall(m_icl, m_ft)
    assert torch.allclose(result.per_example, torch.tensor([[1 / 3, -1.0], [1.0, -1.0]], dtype=torch.float64))
    assert result.per_layer == pytest.approx([2 / 3, -1.0])
    assert result.mean == pytest.approx(-1 / 6)


def test_kendall_is_tau_b_with_ties():
    x, y = torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 2.0, 3.0])
    result = kendall(x.view(1, 1, 4), y.view(1, 1, 4))
    assert result.mean == pytest.approx(kendalltau(x.numpy(), y.numpy(), variant="b").statistic)
    # tau-b by hand: 4 concordant, 0 discordant, 1 tie in x only, 1 tie in y only: 4 / sqrt(5 * 5)
    assert result.mean == pytest.approx(4 / 5)


def test_kendall_constant_vector_gives_zero_and_is_counted():
    result = kendall(torch.ones(1, 2, 3), torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]]))
    assert result.zero_per_layer == [1, 1] and result.mean == 0.0 and not math.isnan(result.mean)


def test_kendall_random_baseline_is_tau_against_the_draw():
    m_icl = torch.randn(4, 2, 20, generator=torch.Generator().manual_seed(0))
    u = torch.rand(4, 2, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = kendall_random(m_icl, u)
    assert a.per_example[1, 1] == pytest.approx(kendalltau(m_icl[1, 1].numpy(), u[1, 1].numpy()).statistic)


def test_check_same_demo_tokens():
    check_same_demo_tokens(torch.tensor([5, 6, 7]), torch.tensor([5, 6, 7]))
    with pytest.raises(ValueError, match="demo token 1 differs"):
        check_same_demo_tokens(torch.tensor([5, 6, 7]), torch.tensor([5, 9, 7]))
    with pytest.raises(ValueError, match="3 demo tokens"):
        check_same_demo_tokens(torch.tensor([5, 6, 7]), torch.tensor([5, 6]))


def test_kendall_of_nan_is_an_error_not_a_counted_constant_vector():
    m = torch.rand(2, 1, 4)
    nan = m.clone()
    nan[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="m_ft holds NaN or inf"):
        kendall(m, nan)
