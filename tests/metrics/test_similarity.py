import math
import re

import pytest
import torch

from iclgd.metrics.kendall import kendall
from iclgd.metrics.output_distribution import kl_divergence, overlap_cosine
from iclgd.metrics.similarity import (
    alpha,
    simam,
    simam_before_ft,
    simam_delta,
    simaou,
    simaou_better_random,
    simaou_norm,
    simaou_random,
)


def _orthogonal_noise_case(d: int = 6):
    """h_ZS = z, h_ICL = z + r, h_FT = z + r' with z, r, r' orthogonal and |r| = |r'| = sqrt(3)|z|."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    z, r, r2 = 2.0 * q[:, 0], 2.0 * math.sqrt(3) * q[:, 1], 2.0 * math.sqrt(3) * q[:, 2]
    shape = (1, 1, d)
    return (z + r).view(shape), z.view(shape), (z + r2).view(shape)


def test_normalised_simaou_is_exactly_one_quarter_on_orthogonal_noise_and_raw_is_zero():
    h_icl, h_zs, h_ft = _orthogonal_noise_case()
    assert math.isclose(simaou_norm(h_icl, h_zs, h_ft).mean, 0.25, abs_tol=1e-12)
    assert math.isclose(simaou(h_icl, h_zs, h_ft).mean, 0.0, abs_tol=1e-12)


def test_simaou_hand_computed():
    h_zs = torch.tensor([[[1.0, 0.0]]])
    h_icl = torch.tensor([[[1.0, 1.0]]])  # Δ = (0, 1)
    h_ft = torch.tensor([[[2.0, 1.0]]])  # Δ = (1, 1)
    assert math.isclose(simaou(h_icl, h_zs, h_ft).mean, 1 / math.sqrt(2), rel_tol=1e-12)
    # normalised: ĥ_ICL − ĥ_ZS = (1/√2 − 1, 1/√2), ĥ_FT − ĥ_ZS = (2/√5 − 1, 1/√5)
    a = torch.tensor([1 / math.sqrt(2) - 1, 1 / math.sqrt(2)], dtype=torch.float64)
    b = torch.tensor([2 / math.sqrt(5) - 1, 1 / math.sqrt(5)], dtype=torch.float64)
    expected = float(a @ b / (a.norm() * b.norm()))
    assert math.isclose(simaou_norm(h_icl, h_zs, h_ft).mean, expected, rel_tol=1e-12)


def test_simaou_counts_tiny_deltas_as_zero_per_layer():
    h_zs = torch.ones(2, 3, 4)
    h_icl = h_zs.clone()
    h_icl[:, 1:] += torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0))
    h_ft = h_zs + torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    for fn in (simaou, simaou_norm):
        result = fn(h_icl, h_zs, h_ft)
        assert result.zero_per_layer == [2, 0, 0]
        assert result.per_layer[0] == 0.0
        assert not math.isnan(result.mean)


def test_dai_random_baseline_matches_formula():
    g = torch.Generator().manual_seed(0)
    h_icl, h_zs = torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g)
    u = torch.rand(3, 2, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    first = simaou_random(h_icl, h_zs, u)
    d = h_icl.double() / h_icl.double().norm(dim=-1, keepdim=True) - h_zs.double() / h_zs.double().norm(
        dim=-1, keepdim=True
    )
    expected = torch.nn.functional.cosine_similarity(d, u, dim=-1)
    assert torch.allclose(first.per_example, expected)
    raw = simaou_random(h_icl, h_zs, u, normalised=False)
    assert torch.allclose(raw.per_example, torch.nn.functional.cosine_similarity((h_icl - h_zs).double(), u, dim=-1))
    with pytest.raises(ValueError, match="shape"):
        simaou_random(h_icl, h_zs, u[:2])


def test_better_random_baseline_is_simaou_with_the_random_capture():
    g = torch.Generator().manual_seed(1)
    h_icl, h_zs, h_rand = (torch.randn(2, 3, 4, generator=g) for _ in range(3))
    better_norm = simaou_better_random(h_icl, h_zs, h_rand, normalised=True)
    better_raw = simaou_better_random(h_icl, h_zs, h_rand, normalised=False)
    assert torch.equal(better_norm.per_example, simaou_norm(h_icl, h_zs, h_rand).per_example)
    assert torch.equal(better_raw.per_example, simaou(h_icl, h_zs, h_rand).per_example)
    assert not torch.equal(better_norm.per_example, better_raw.per_example)


def test_simam_on_padded_logits_is_exact_and_ignores_padding():
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([3, 5])
    m_icl, m_ft = torch.randn(2, 2, 3, 5, generator=g), torch.randn(2, 2, 3, 5, generator=g)
    m_icl[0, :, :, 3:] = 0.0
    m_ft[0, :, :, 3:] = 123.0  # garbage past the length must be ignored
    result = simam(m_icl, m_ft, lengths)
    for n, length in enumerate(lengths.tolist()):
        expected = torch.nn.functional.cosine_similarity(
            m_icl[n, ..., :length].double(), m_ft[n, ..., :length].double(), dim=-1
        ).mean(-1)
        assert torch.allclose(result.per_example[n], expected)
    # zero padding without lengths gives the same value: padded cosines are exact
    m_ft[0, :, :, 3:] = 0.0
    assert torch.allclose(simam(m_icl, m_ft).per_example, result.per_example)


def test_simam_hand_computed_and_before_ft_baseline():
    m_icl = torch.tensor([[[[1.0, 2.0, 0.0], [1.0, 0.0, 0.0]]]])  # N=1, L=1, H=2, T=3
    m_ft = torch.tensor([[[[2.0, 4.0, 0.0], [0.0, 1.0, 0.0]]]])
    result = simam(m_icl, m_ft, torch.tensor([2]))
    assert result.per_layer == pytest.approx([0.5])  # heads: 1 and 0
    assert simam_before_ft(m_icl, m_ft, torch.tensor([2])).per_layer == pytest.approx([0.5])


def test_simam_delta_counts_structural_zeros_of_layer_zero():
    g = torch.Generator().manual_seed(4)
    m_zs = torch.randn(2, 3, 2, 4, generator=g)
    m_icl = m_zs + torch.randn(2, 3, 2, 4, generator=g)
    m_icl[:, 0] = m_zs[:, 0] + 1e-9  # layer 0: ICL equals ZS up to rounding noise
    m_ft = m_zs + torch.randn(2, 3, 2, 4, generator=g)
    result = simam_delta(m_icl, m_zs, m_ft)
    assert result.zero_per_layer == [4, 0, 0]  # 2 examples x 2 heads
    assert result.per_layer[0] == 0.0
    expected = torch.nn.functional.cosine_similarity((m_icl - m_zs).double()[:, 1:], (m_ft - m_zs).double()[:, 1:], -1)
    assert torch.allclose(result.per_example[:, 1:], expected.mean(-1))


def test_alpha_is_simam_delta_between_lcgd_and_gd():
    m_zs = torch.tensor([[[[1.0, 1.0]]]])
    m_lcgd = torch.tensor([[[[2.0, 1.0]]]])  # Δ = (1, 0)
    m_gd = torch.tensor([[[[2.0, 2.0]]]])  # Δ = (1, 1)
    assert math.isclose(alpha(m_lcgd, m_gd, m_zs).mean, 1 / math.sqrt(2), rel_tol=1e-12)


@pytest.mark.parametrize("call, names", [
    (lambda: simaou_norm(torch.ones(2, 3, 4), torch.ones(2, 3, 5), torch.ones(2, 3, 4)),
     "h_icl [2, 3, 4], h_zs [2, 3, 5]"),
    (lambda: simaou(torch.ones(3, 4), torch.ones(3, 4), torch.ones(3, 4)), "of one shape [N, L, d]"),
    (lambda: simam(torch.ones(2, 3, 4, 5), torch.ones(2, 3, 4)), "m_icl [2, 3, 4, 5], m_ft [2, 3, 4]"),
    (lambda: simam_delta(*[torch.ones(2, 1, 1, 5)] * 3, lengths=torch.tensor([9, 9])), "token counts in 0..5"),
    (lambda: simam(*[torch.ones(2, 1, 1, 5)] * 2, lengths=torch.tensor([3])), "2 token counts"),
    (lambda: kendall(torch.ones(3, 4), torch.ones(3, 4)), "of one shape [N, L, J]"),
    (lambda: overlap_cosine(torch.ones(4, 50), torch.ones(4, 40)), "p1 [4, 50] and p2 [4, 40]"),
    (lambda: kl_divergence(torch.ones(4, 50), torch.ones(50)), "one shape [..., vocab]"),
])
def test_wrong_shapes_are_named(call, names):
    """A metric called with mismatched shapes says which arguments and which shapes, not a torch broadcast error."""
    with pytest.raises(ValueError, match=re.escape(names)):
        call()
