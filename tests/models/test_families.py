"""The family table against transformers 5.23: paths, routing, windows, fused K/V layouts."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from transformers import BertConfig

from iclgd.errors import UserError
from iclgd.models.families import (
    FAMILIES,
    attention_modules,
    family_of,
    get_module,
    is_norm,
    kv_parameters,
    layer_window,
    projection_parameters,
    projection_weight,
)
from iclgd.models.loading import loaded
from iclgd.models.tiny import tiny_model

FAMILY_NAMES = tuple(family.name for family in FAMILIES)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_table_paths_resolve(family_name):
    model, _ = tiny_model(family_name)
    family = family_of(model)
    assert family.name == family_name
    attentions = attention_modules(model, family)
    assert len(attentions) == model.config.num_hidden_layers
    for attention in attentions:
        assert "Attention" in type(attention).__name__
        projections = [family.fused_qkv] if family.fused_qkv else [family.q_proj, family.k_proj, family.v_proj]
        for path in [*projections, family.o_proj]:
            assert isinstance(get_module(attention, path), nn.Module)
    assert is_norm(get_module(model, family.final_norm))
    assert get_module(model, family.unembedding) is model.get_output_embeddings()
    assert get_module(model, family.embeddings[0]) is model.get_input_embeddings()


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_attention_routing_matches_transformers_source(family_name):
    """Interface families call ALL_ATTENTION_FUNCTIONS in their attention forward; the others do not."""
    model, _ = tiny_model(family_name)
    family = family_of(model)
    source = inspect.getsource(type(attention_modules(model, family)[0]).forward)
    assert ("ALL_ATTENTION_FUNCTIONS.get_interface(" in source) == family.attention_interface


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_soft_caps_match_transformers_source(family_name):
    """The table declares an attention cap iff the attention forward passes ``softcap=`` from that config attribute,
    and a final cap iff the CausalLM forward caps its logits with that attribute."""
    model, _ = tiny_model(family_name)
    family = family_of(model)
    attention_source = inspect.getsource(type(attention_modules(model, family)[0]).forward)
    lm_source = inspect.getsource(type(model).forward)
    if family.attn_softcap_attr is None:
        assert "softcap=" not in attention_source
    else:
        assert f"softcap=self.{family.attn_softcap_attr}" in attention_source
    if family.final_softcap_attr is None:
        assert "softcapping" not in lm_source
    else:
        assert f"self.config.{family.final_softcap_attr}" in lm_source


@pytest.mark.parametrize(
    ("family_name", "attribute"),
    [("gemma3", "attn_logit_softcapping"), ("llama", "final_logit_softcapping"), ("gpt_neo", "attn_logit_softcapping")],
)
def test_undeclared_soft_cap_is_refused(family_name, attribute):
    """A cap no path of the family applies (Gemma 3's attention ignores attn_logit_softcapping) is refused, one line."""
    model, _ = tiny_model(family_name)
    config = model.config
    setattr(config, attribute, 30.0)
    with pytest.raises(UserError, match=f"sets {attribute}=30.0") as error:
        family_of(config)
    assert "\n" not in str(error.value)
    setattr(config, attribute, None)
    assert family_of(config).name == family_name


def test_bidirectional_gemma_is_refused():
    model, _ = tiny_model("gemma3")
    model.config.use_bidirectional_attention = True
    with pytest.raises(UserError, match="causal LMs only"):
        family_of(model)


@pytest.mark.parametrize(
    ("family_name", "windows"),
    [("gpt_neo", [None, 4]), ("mistral", [4, 4]), ("qwen2", [None, 4]), ("llama", [None, None]),
     ("gpt2", [None, None]), ("phi3", [4, 4]), ("gemma2", [4, None]), ("gemma3", [None, 4])],
)
def test_layer_windows(family_name, windows):
    model, tokenizer = tiny_model(family_name)
    family = family_of(model)
    assert [layer_window(model.config, family, i) for i in range(2)] == windows
    if family_name in ("qwen2", "gemma2", "gemma3"):  # their own per-layer attribute agrees
        assert [a.sliding_window for a in attention_modules(model, family)] == windows
    lm = loaded(model, tokenizer, name=family_name)
    assert [a._iclgd_window for a in attention_modules(lm.model, family)] == windows


@pytest.mark.parametrize("family_name", ["gpt2", "gpt_neox", "phi3"])
def test_fused_kv_masks_leave_q_untouched(family_name):
    """Moving a fused q/k/v parameter along its K/V mask changes k and v, never q (the model's own split)."""
    model, _ = tiny_model(family_name)
    family = family_of(model)
    slices = kv_parameters(model, family)
    per_layer = 1 if family_name == "phi3" else 2  # weight and bias of each fused projection (Phi-3: no bias)
    assert len(slices) == per_layer * model.config.num_hidden_layers
    attention = attention_modules(model, family)[0]
    fused = get_module(attention, family.fused_qkv)
    x = torch.randn(1, 3, model.config.hidden_size)

    def split(out):
        if family.fused_layout == "columns":
            return out.split(model.config.hidden_size, dim=2)
        if family.fused_layout == "rows":  # Phi-3: [q | k | v] with GQA sizes, as its forward slices it
            head_dim = model.config.hidden_size // model.config.num_attention_heads
            q_size, kv_size = model.config.num_attention_heads * head_dim, model.config.num_key_value_heads * head_dim
            assert kv_size < q_size  # GQA: the slices have different sizes
            return out.split([q_size, kv_size, kv_size], dim=2)
        heads = model.config.num_attention_heads
        return out.view(1, 3, heads, -1).chunk(3, dim=-1)

    with torch.no_grad():
        before = split(fused(x))
        for s in slices[:per_layer]:
            s.parameter.add_(torch.randn_like(s.parameter) * s.mask)
        after = split(fused(x))
    assert torch.equal(before[0], after[0])
    assert not torch.equal(before[1], after[1]) and not torch.equal(before[2], after[2])


@pytest.mark.parametrize("family_name", ["llama", "opt", "gptj", "gemma2", "gemma3"])
def test_unfused_kv_parameters(family_name):
    model, _ = tiny_model(family_name)
    family = family_of(model)
    names = [s.name for s in kv_parameters(model, family)]
    assert names and all((".k_proj." in n or ".v_proj." in n) and s.mask is None
                         for n, s in zip(names, kv_parameters(model, family), strict=True))


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_projection_weight_is_what_the_model_applies(family_name):
    """W_Q, W_K, W_V cut out of each layout (fused or not) map x to the model's own q, k, v (bias aside), and
    projection_parameters of one kind masks exactly that kind."""
    model, _ = tiny_model(family_name)
    family = family_of(model)
    attention = attention_modules(model, family)[1]
    x = torch.randn(1, 3, model.config.hidden_size)
    with torch.no_grad():
        for kind in "qkv":
            w = projection_weight(model, family, kind, 1)
            if family.fused_qkv is None:
                module = get_module(attention, getattr(family, f"{kind}_proj"))
                bias = module.bias if getattr(module, "bias", None) is not None else 0
                expected = module(x) - bias
            else:
                fused = get_module(attention, family.fused_qkv)
                bias = fused.bias if getattr(fused, "bias", None) is not None else torch.zeros(1)
                (mask,) = [s.mask for s in projection_parameters(model, family, (kind,), [1]) if s.parameter.dim() == 2]
                out = fused(x) - bias
                keep = mask[0] if family.fused_layout == "columns" else mask[:, 0]
                expected = out[..., keep]
            assert w.shape[1] == model.config.hidden_size
            torch.testing.assert_close(x @ w.T, expected, rtol=1e-5, atol=1e-5)


def test_unsupported_architecture():
    with pytest.raises(UserError, match="unsupported architecture 'bert'"):
        family_of(BertConfig())


@pytest.mark.parametrize("family_name", [*FAMILY_NAMES, "opt-350m"])
def test_unembed_matches_model_logits(family_name):
    """unembed(last block output) == the model's logits (final norm, OPT's project_out, unembedding, final cap)."""
    from iclgd.models.families import blocks, unembed

    if family_name == "opt-350m":  # no final layer norm; project_out from width 32 to the embeddings' 16
        model, _ = tiny_model("opt", config_overrides={"word_embed_proj_dim": 16, "do_layer_norm_before": False})
        assert model.model.decoder.final_layer_norm is None and model.model.decoder.project_out is not None
    else:
        model, _ = tiny_model(family_name)
    family = family_of(model)
    captured = {}
    handle = blocks(model, family)[-1].register_forward_hook(
        lambda module, args, output: captured.setdefault("h", output[0] if isinstance(output, tuple) else output))
    with torch.no_grad():
        logits = model(torch.arange(4, 12)[None]).logits
    handle.remove()
    torch.testing.assert_close(unembed(model, family, captured["h"]).float(), logits.float(), atol=1e-5, rtol=0)
