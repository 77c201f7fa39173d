"""Momentum attention (Dai et al. §5): hand-computed term, η = 0 is vanilla GPT-2 bit for bit, no future value leaks,
save / load round trips, a KV cache and iclgd's shared prefix give the whole-sequence result."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from iclgd.models.capture import encode_prefix, forward
from iclgd.models.loading import load_model, loaded
from iclgd.models.momentum import (
    MomentumGPT2Config,
    MomentumGPT2LMHeadModel,
    MomentumLlamaConfig,
    MomentumLlamaForCausalLM,
    momentum_term,
)
from iclgd.models.tiny import tiny_model

SHAPE = dict(vocab_size=40, n_positions=48, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0)
# LLaMA with grouped-query attention: 4 query heads share 2 value heads
LLAMA_SHAPE = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=48)
FAMILIES = {"gpt2": (GPT2Config, GPT2LMHeadModel, MomentumGPT2Config, MomentumGPT2LMHeadModel, SHAPE),
            "llama": (LlamaConfig, LlamaForCausalLM, MomentumLlamaConfig, MomentumLlamaForCausalLM, LLAMA_SHAPE)}


def _model(seed: int = 0, family: str = "gpt2", **momentum):
    _, _, config, cls, shape = FAMILIES[family]
    torch.manual_seed(seed)
    return cls(config(**shape, **momentum)).eval()


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 40, (1, n), generator=torch.Generator().manual_seed(seed))


def test_momentum_term_by_hand():
    values = torch.tensor([1.0, 2.0, 4.0])[None, None, :, None]  # [B=1, H=1, S=3, D=1]
    out = momentum_term(values, torch.arange(3), torch.tensor(0.5))
    assert out.flatten().tolist() == [0.0, 0.5, 0.5 * 2 + 0.25 * 1]
    # the recurrence m_t = η (m_{t-1} + v_{t-1}); one decay per channel equals the scalar where the channels agree
    values = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    out = momentum_term(values, torch.arange(7), torch.tensor(0.8, dtype=torch.float64))
    for t in range(1, 7):
        torch.testing.assert_close(out[:, :, t], 0.8 * (out[:, :, t - 1] + values[:, :, t - 1]))
    torch.testing.assert_close(momentum_term(values, torch.arange(7), torch.full((3, 4), 0.8, dtype=torch.float64)),
                               out)
    # queries later in the sequence (after 3 earlier values) see those with their distances
    torch.testing.assert_close(momentum_term(values, torch.arange(3, 7), torch.tensor(0.8, dtype=torch.float64)),
                               out[:, :, 3:])


@pytest.mark.parametrize("family", FAMILIES)
def test_eta_zero_is_vanilla_exactly(family):
    vanilla_config, vanilla_cls, _, _, shape = FAMILIES[family]
    torch.manual_seed(0)
    vanilla = vanilla_cls(vanilla_config(**shape)).eval()
    momentum = _model(family=family, momentum_eta=0.0)
    momentum.load_state_dict(vanilla.state_dict())
    ids = _ids(20)
    with torch.no_grad():
        assert torch.equal(momentum(ids).logits, vanilla(ids).logits)
        moved = _model(family=family, momentum_eta=0.5)
        moved.load_state_dict(vanilla.state_dict())
        assert not torch.allclose(moved(ids).logits, vanilla(ids).logits, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("learned", [False, True])
def test_no_future_value_leaks(learned, family):
    model = _model(family=family, momentum_eta=0.9, momentum_learned=learned)
    ids = _ids(20)
    changed = ids.clone()
    changed[0, 12] = (changed[0, 12] + 1) % 40
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[0, :12], b[0, :12]) and not torch.allclose(a[0, 12:], b[0, 12:])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("learned", [False, True])
def test_save_and_load_round_trip(tmp_path, learned, family):
    model = _model(family=family, momentum_eta=0.7, momentum_learned=learned)
    if learned:
        with torch.no_grad():  # decays that differ per channel, as after training
            for name, parameter in model.named_parameters():
                if name.endswith("momentum_logit"):
                    parameter.normal_()
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(again) is FAMILIES[family][3] and again.config.momentum_eta == 0.7
    assert again.config.momentum_learned is learned
    with torch.no_grad():
        assert torch.equal(again(_ids(16)).logits, model(_ids(16)).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_gives_the_whole_sequence_result(family):
    model = _model(family=family, momentum_eta=0.8, momentum_learned=True)
    ids = _ids(18)
    with torch.no_grad():
        whole = model(ids).logits
        first = model(ids[:, :11], use_cache=True)
        rest = model(ids[:, 11:], past_key_values=first.past_key_values, use_cache=True).logits
    torch.testing.assert_close(rest, whole[:, 11:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_iclgd_shared_prefix_and_loading(tmp_path, family):
    """Scored on iclgd's shared prefix (right-padded queries), the logits are the whole sequence's; the folder loads
    through iclgd's loader as a model of its family."""
    model = _model(seed=3, family=family, momentum_eta=0.85, momentum_learned=family == "llama")
    _, tokenizer = tiny_model(family, seed=3)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    lm = load_model(str(tmp_path / "m"))
    assert lm.family.name == family and type(lm.model) is FAMILIES[family][3]
    prefix_ids, queries = _ids(12, seed=5)[0], [_ids(n, seed=n)[0] for n in (5, 3, 7)]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for row, query in enumerate(queries):
        ids[row, :len(query)], mask[row, :len(query)] = query, 1
    logits, _ = forward(lm, ids, mask, prefix=encode_prefix(lm, prefix_ids))
    for row, query in enumerate(queries):
        with torch.no_grad():
            full = reference(torch.cat([prefix_ids, query])[None]).logits[0, 12:]
        torch.testing.assert_close(logits[row, :len(query)], full, atol=1e-5, rtol=0)
    assert loaded(model, tokenizer, name="m").family.name == family


def test_bad_decays_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MomentumGPT2Config(momentum_eta=1.0)
    with pytest.raises(ValueError, match="learned decays start"):
        MomentumGPT2Config(momentum_eta=0.0, momentum_learned=True)


def test_far_positions_in_bfloat16_and_per_channel_blocks():
    """Distances past 256 stay exact in bf16 (computed in fp32); per-channel decays in blocks of queries give the
    one-block result."""
    values = torch.randn(1, 2, 600, 4, dtype=torch.float64)
    reference = momentum_term(values, torch.arange(600), torch.tensor(0.9, dtype=torch.float64))
    low = momentum_term(values.bfloat16(), torch.arange(600), torch.tensor(0.9))
    assert (low.double() - reference).abs().max() < 0.1 * reference.abs().max()
    decays = torch.rand(2, 4, dtype=torch.float64) * 0.9
    whole = momentum_term(values[:, :, :50], torch.arange(50), decays)
    torch.testing.assert_close(momentum_term(values[:, :, :50], torch.arange(50), decays, chunk_elements=100), whole)


def test_left_padding_is_refused():
    model = _model(momentum_eta=0.5)
    ids = _ids(6)
    with torch.no_grad():
        model(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]]))  # right padding: fine
        with pytest.raises(ValueError, match="right-padded"):
            model(ids, attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]))
