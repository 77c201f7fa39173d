"""SimAM_Δ's structural zeros: in a rotary family, layer 0's logits over the test tokens are the same with and
without demonstrations (they depend only on token ids and relative offsets), so Δ is rounding noise and counts as
zero; with learned absolute positions (GPT-2) they are not."""

import pytest
import torch

from iclgd.metrics.similarity import simam_delta
from iclgd.models.capture import CaptureRequest, encode_prefix, forward
from iclgd.models.families import family_named
from iclgd.models.loading import loaded
from iclgd.models.tiny import tiny_model


def _zs_icl_logits(family: str, prefix_tokens: int = 12, dtype: torch.dtype = torch.float32):
    model, tokenizer = tiny_model(family)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, prefix_tokens + 8)
    lm = loaded(model.to(dtype), tokenizer, name=family)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    bos = torch.tensor([1])
    demos = torch.randint(3, vocab, (prefix_tokens,), generator=g)
    tests = torch.randint(3, vocab, (3, 5), generator=g)
    ones = torch.ones(3, 5, dtype=torch.long)
    last = torch.full((3,), 4)
    icl_request = CaptureRequest(analysis_index=last, test_start=torch.zeros(3, dtype=torch.long))
    prefix = encode_prefix(lm, torch.cat([bos, demos]))
    _, icl = forward(lm, tests, ones, prefix=prefix, request=icl_request)
    zs_ids = torch.cat([bos.expand(3, 1), tests], dim=1)
    zs_request = CaptureRequest(analysis_index=last + 1, test_start=torch.ones(3, dtype=torch.long))
    _, zs = forward(lm, zs_ids, torch.ones_like(zs_ids), request=zs_request)
    return icl.presoftmax_logits, zs.presoftmax_logits, model.config.num_attention_heads


def test_rotary_layer_zero_delta_counts_as_zero_on_a_tiny_llama():
    m_icl, m_zs, heads = _zs_icl_logits("llama")
    m_ft = m_zs + torch.randn(m_zs.shape, generator=torch.Generator().manual_seed(1))
    result = simam_delta(m_icl, m_zs, m_ft)
    assert result.zero_per_layer[0] == 3 * heads  # every example and head of layer 0
    assert result.per_layer[0] == 0.0
    assert result.zero_per_layer[1] == 0


def test_absolute_positions_have_no_structural_zeros():
    m_icl, m_zs, _ = _zs_icl_logits("gpt2")
    m_ft = m_zs + torch.randn(m_zs.shape, generator=torch.Generator().manual_seed(1))
    assert simam_delta(m_icl, m_zs, m_ft).zero_per_layer == [0, 0]


@pytest.mark.parametrize("prefix_tokens, dtype", [(3000, torch.float32), (12, torch.bfloat16)])
def test_the_rotary_first_layer_is_zero_past_any_fixed_tolerance(prefix_tokens, dtype):
    """Layer 0's rounding noise grows with the prefix's positions and with a 16-bit dtype past the 1e-6 tolerance,
    so the family table names the layer and its Δ_ICL is set to zero: every (example, head) pair counts."""
    m_icl, m_zs, heads = _zs_icl_logits("llama", prefix_tokens, dtype)
    m_ft = m_zs.float() + torch.randn(m_zs.shape, generator=torch.Generator().manual_seed(1))
    assert simam_delta(m_icl, m_zs, m_ft).zero_per_layer[0] < 3 * heads  # the tolerance alone misses some
    blind = simam_delta(m_icl, m_zs, m_ft, icl_unchanged_layers=family_named("llama").layers_blind_to_demos)
    assert blind.zero_per_layer[0] == 3 * heads and blind.per_layer[0] == 0.0
    assert blind.zero_per_layer[1] == 0 and blind.per_layer[1] != 0.0


def test_only_rotary_families_name_a_layer_blind_to_demos():
    assert family_named("llama").layers_blind_to_demos == family_named("gemma3").layers_blind_to_demos == (0,)
    assert family_named("gpt2").layers_blind_to_demos == family_named("opt").layers_blind_to_demos == ()
