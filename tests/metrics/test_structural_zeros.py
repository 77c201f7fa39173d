"""SimAM_Δ's structural zeros: in a rotary family, layer 0's logits over the test tokens are the same with and
without demonstrations (they depend only on token ids and relative offsets), so Δ is rounding noise and counts as
zero; with learned absolute positions (GPT-2) they are not."""

import pytest
import torch

from iclgd.metrics.similarity import simam_delta
from iclgd.models.capture import CaptureRequest, encode_prefix, forward
from iclgd.models.families import FAMILIES, family_named
from iclgd.models.loading import loaded
from iclgd.models.tiny import tiny_model


def _zs_icl_logits(family: str, prefix_tokens: int = 12, dtype: torch.dtype = torch.float32, overrides=None):
    model, tokenizer = tiny_model(family, config_overrides=overrides)
    if overrides is None:
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


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_the_layers_a_family_names_blind_to_demos_are_so(family):
    """Every family's entry against its tiny model: layer 0's scores over the test tokens after a 40-token prefix
    equal those without it, to rounding, exactly where the entry names layer 0 (rotary positions), and move where
    positions are absolute."""
    m_icl, m_zs, _ = _zs_icl_logits(family, prefix_tokens=40)
    moved = float((m_icl - m_zs)[:, 0].abs().max() / m_zs[:, 0].abs().max())
    assert (moved < 1e-5) == (family_named(family).layers_blind_to_demos == (0,)), moved


LONGROPE = dict(max_position_embeddings=256, original_max_position_embeddings=32,
                rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.5,
                                     original_max_position_embeddings=32, short_factor=[1.0] * 2,
                                     long_factor=[4.0] * 2))


def test_longrope_models_get_the_context_where_one_set_of_frequencies_serves():
    """Longrope rotates a whole sequence by its long factors once it passes original_max_position_embeddings: a prompt
    with demos past it and one without would differ at layer 0, and a shared demo prefix would not match its full
    prompt. The context stops there, so layer 0 stays blind to the demos."""
    from iclgd.models.families import model_context, rope_length_limit

    model, _ = tiny_model("phi3", config_overrides=LONGROPE)
    assert rope_length_limit(model.config) == 32 and model_context(model.config) == 32
    assert rope_length_limit(tiny_model("phi3")[0].config) is None
    m_icl, m_zs, _ = _zs_icl_logits("phi3", prefix_tokens=20, overrides=LONGROPE)
    assert float((m_icl - m_zs)[:, 0].abs().max()) < 1e-5
    with pytest.raises(ValueError, match="more than the model's 32"):
        _zs_icl_logits("phi3", prefix_tokens=40, overrides=LONGROPE)
