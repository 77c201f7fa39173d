"""load_model (local folders, errors) and the untrained variants."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from iclgd.errors import UserError
from iclgd.models.capture import CaptureRequest, forward
from iclgd.models.families import get_module, is_norm
from iclgd.models.loading import UNTRAINED_VARIANTS, load_model, loaded, make_untrained
from iclgd.models.tiny import save_tiny_model, tiny_model


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"), seed=2)


def test_load_saved_folder(llama_folder):
    lm = load_model(str(llama_folder))
    model, tokenizer = tiny_model("llama", seed=2)
    assert lm.family.name == "llama" and lm.dtype == torch.float32 and lm.untrained is None
    assert lm.source_revision is None  # a local folder has no hub commit
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.model.config._attn_implementation == "iclgd"
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, dict(lm.model.named_parameters())[name])
    text = "Sentence: a great movie Label: Negative"
    assert lm.tokenizer(text).input_ids == tokenizer(text).input_ids


@pytest.mark.parametrize("family_name", ["phi3", "gemma2", "gemma3"])
def test_load_saved_folder_computes_the_stock_logits(family_name, tmp_path):
    """load_model routes attention through iclgd (Gemma 2 supports no sdpa: a registered function still serves it);
    forward gives the stock eager logits, soft caps included."""
    folder = save_tiny_model(family_name, tmp_path / family_name, seed=2)
    lm = load_model(str(folder))
    stock, _ = tiny_model(family_name, seed=2)
    assert lm.family.name == family_name and lm.model.config._attn_implementation == "iclgd"
    ids = torch.arange(5, 25)[None]
    logits, _ = forward(lm, ids, torch.ones_like(ids))
    with torch.no_grad():
        torch.testing.assert_close(logits, stock(ids).logits, atol=1e-5, rtol=0)


def test_load_in_bfloat16(llama_folder):
    lm = load_model(str(llama_folder), dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in lm.model.parameters())


def test_folder_without_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserError, match="not a model"):
        load_model(str(tmp_path))


def test_folder_without_its_tokenizer_is_one_line_before_the_weights(llama_folder, tmp_path):
    import shutil

    folder = shutil.copytree(llama_folder, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(UserError, match="cannot load the tokenizer of .*tokenizer.save_pretrained") as error:
        load_model(str(folder))
    assert "\n" not in str(error.value)


def test_missing_folder(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such file or directory"):
        load_model(str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="'nothere.gguf' is not a model folder or .gguf file"):  # not a hub id
        load_model("nothere.gguf")


def test_unknown_name_without_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="no network") as error:
        load_model("someone/no-such-model")
    assert "huggingface-cli download someone/no-such-model" in str(error.value)
    assert "\n" not in str(error.value)


def test_unsupported_architecture(tmp_path):
    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="unsupported architecture 'bert'"):
        load_model(str(tmp_path))


def test_bad_dtype_and_variant(llama_folder):
    with pytest.raises(UserError, match="unknown dtype"):
        load_model(str(llama_folder), dtype="float8")
    with pytest.raises(UserError, match="unknown untrained variant"):
        load_model(str(llama_folder), untrained="half")


def _parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _untrained(family_name: str, variant: str, seed: int):
    model, tokenizer = tiny_model(family_name, seed=0)
    lm = loaded(model, tokenizer, name=family_name)
    make_untrained(lm.model, lm.family, variant, seed)
    return lm


@pytest.mark.parametrize("family_name", ["gpt2", "llama", "opt", "gpt_neo", "gemma3"])
def test_untrained_variants(family_name):
    trained = _parameters(tiny_model(family_name, seed=0)[0])
    for variant in UNTRAINED_VARIANTS:
        lm = _untrained(family_name, variant, seed=11)
        again = _parameters(_untrained(family_name, variant, seed=11).model)
        other_seed = _parameters(_untrained(family_name, variant, seed=12).model)
        model = lm.model
        kept_norm = {n for m_name, m in model.named_modules() if is_norm(m)
                     for n in (f"{m_name}.{p}" for p, _ in m.named_parameters(recurse=False))}
        kept_embedding = {f"{path}.{p}" for path in (*lm.family.embeddings, lm.family.unembedding)
                          for p, _ in get_module(model, path).named_parameters()}
        for name, parameter in model.named_parameters():
            assert torch.equal(parameter, again[name]), f"{variant}: {name} not reproducible"
            which = variant.removesuffix("_fairseq")
            keep = (which != "all" and name in kept_norm) or (which == "trained_embeddings" and name in kept_embedding)
            if keep:
                assert torch.equal(parameter, trained[name]), f"{variant}: {name} should be the checkpoint's"
            elif parameter.std() > 0:  # zero-initialised biases and unit norms stay equal across seeds
                assert not torch.equal(parameter, trained[name]), f"{variant}: {name} should be re-initialised"
                assert not torch.equal(parameter, other_seed[name]), f"{variant}: {name} ignores the seed"
        assert lm.model.config._attn_implementation == "iclgd"  # re-initialising must not unhook attention
        _, capture = forward(lm, torch.arange(4, 10)[None], torch.ones(1, 6, dtype=torch.long),
                             request=CaptureRequest(torch.tensor([5]), torch.tensor([0])))
        assert torch.isfinite(capture.presoftmax_logits).all()
        attention = [n for n in trained if (".q_proj." in n or ".c_attn." in n) and n.endswith("weight")]
        assert attention and all(not torch.equal(dict(model.named_parameters())[n], trained[n]) for n in attention)


def test_untrained_trained_embeddings_keeps_untied_lm_head():
    lm = _untrained("llama", "trained_embeddings", seed=1)
    original = tiny_model("llama", seed=0)[0]
    assert lm.model.lm_head.weight.data_ptr() != lm.model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(lm.model.lm_head.weight, original.lm_head.weight)
    assert torch.equal(lm.model.model.embed_tokens.weight, original.model.embed_tokens.weight)


def test_untrained_gemma_keeps_its_embedding_scale_and_tie():
    """Gemma scales embeddings by sqrt(d) in embed_tokens (a buffer, not a weight): every variant keeps that scale and
    the tied unembedding; trained_embeddings keeps the checkpoint's embedding (and so the unembedding)."""
    original = tiny_model("gemma3", seed=0)[0]
    for variant in ("all", "trained_embeddings"):
        lm = _untrained("gemma3", variant, seed=1)
        embed = lm.model.model.embed_tokens
        assert float(embed.embed_scale) == pytest.approx(lm.model.config.hidden_size ** 0.5)
        assert lm.model.lm_head.weight.data_ptr() == embed.weight.data_ptr()
        assert torch.equal(embed.weight, original.model.embed_tokens.weight) == (variant == "trained_embeddings")
        ids = torch.arange(4, 10)[None]
        with torch.no_grad():  # the model really reads embeddings through the scale
            assert torch.allclose(embed(ids), embed.weight[ids] * lm.model.config.hidden_size ** 0.5)


def test_untrained_through_load_model_is_dtype_independent(llama_folder):
    fp32 = load_model(str(llama_folder), untrained="all", seed=4)
    bf16 = load_model(str(llama_folder), untrained="all", seed=4, dtype="bfloat16")
    for (name, a), (_, b) in zip(fp32.model.named_parameters(), bf16.model.named_parameters(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), name
    assert fp32.untrained == "all"


@pytest.mark.parametrize("family_name", ["gpt2", "llama", "gpt_neox", "phi3"])
def test_fairseq_initialisation(family_name):
    """all_fairseq draws every weight as fairseq built Deutch et al.'s models: W_Q, W_K, W_V (each cut of a fused
    projection on its own) xavier-uniform with gain 1/√2, non-zero q/k/v biases, W_O xavier with a zero bias, the
    other Linears PyTorch's default, embeddings N(0, 1/d). Uniform draws: every entry within the bound, the largest
    near it."""
    import math

    from iclgd.models.families import attention_modules, get_module, projection_weight

    lm = _untrained(family_name, "all_fairseq", seed=3)
    model, family = lm.model, lm.family
    d = model.config.hidden_size

    def within(weight, bound):
        top = float(weight.abs().max())
        assert top <= bound * (1 + 1e-6) and top > 0.75 * bound, (top, bound)

    for layer, attention in enumerate(attention_modules(model, family)):
        for kind in ("q", "k", "v"):
            weight = projection_weight(model, family, kind, layer)  # (out, in)
            within(weight, math.sqrt(6 / sum(weight.shape)) / math.sqrt(2))
        output = get_module(attention, family.o_proj)
        within(output.weight, math.sqrt(6 / sum(output.weight.shape)))
        if output.bias is not None:
            assert not output.bias.any()
    biases = [p for n, p in model.named_parameters()
              if n.endswith("bias") and any(part in n for part in (".c_attn.", "query_key_value", "qkv"))]
    if family_name in ("gpt2", "gpt_neox"):
        assert biases and all(bool((b != 0).any()) for b in biases)  # fairseq's q/k/v biases are not zero
    embedding = model.get_input_embeddings().weight
    assert float(embedding.std()) == pytest.approx(d ** -0.5, rel=0.15)
    mlp = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "mlp" in n]
    for module in mlp:  # nn.Linear's default: weight and bias within 1/sqrt(fan_in)
        within(module.weight, 1 / math.sqrt(module.in_features))


def test_a_model_files_sha256_is_computed_once_per_size_and_time(tmp_path, monkeypatch):
    """Every unit records its local model's sha256; the digest is kept by (path, size, mtime) under ICLGD_CACHE, so
    a sweep's units (or a SLURM array's jobs) do not read the weights again, and a rewritten file is hashed anew."""
    import hashlib
    import os

    from iclgd.models.loading import file_sha256

    monkeypatch.setenv("ICLGD_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first")
    assert file_sha256(weights) == hashlib.sha256(b"first").hexdigest()
    (cached,) = (tmp_path / "cache" / "sha256").iterdir()
    assert cached.read_text().strip() == hashlib.sha256(b"first").hexdigest()
    weights.write_bytes(b"other")
    os.utime(weights, ns=(2, 2))
    assert file_sha256(weights) == hashlib.sha256(b"other").hexdigest()
