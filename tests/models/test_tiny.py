"""Tiny models and their in-memory tokenizers: family conventions, label words as single tokens, determinism."""

from __future__ import annotations

import time

import pytest
import torch

from iclgd.errors import UserError
from iclgd.models.families import FAMILIES
from iclgd.models.tiny import LABEL_WORDS, tiny_model, tiny_tokenizer

FAMILY_NAMES = tuple(family.name for family in FAMILIES)
SENTENCEPIECE = ("llama", "mistral", "phi3")  # dummy prefix: every separately tokenised text starts a word


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_label_words_are_single_tokens(family_name):
    tokenizer = tiny_tokenizer(family_name)
    for word in LABEL_WORDS:
        # Byte-level BPE: " Negative" (prefix space); SentencePiece: the separately tokenised "▁Negative".
        text = word if family_name in SENTENCEPIECE else " " + word
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, tokenizer.convert_ids_to_tokens(ids))


@pytest.mark.parametrize(
    ("family_name", "first_tokens", "bos"),
    [
        ("gpt2", ["Label", ":", "ĠNegative"], "<|endoftext|>"),
        ("gpt_neo", ["Label", ":", "ĠNegative"], "<|endoftext|>"),
        ("gptj", ["Label", ":", "ĠNegative"], "<|endoftext|>"),
        ("gpt_neox", ["Label", ":", "ĠNegative"], "<|endoftext|>"),
        ("opt", ["</s>", "Label", ":", "ĠNegative"], "</s>"),
        ("xglm", ["Label", ":", "ĠNegative"], "<s>"),
        ("llama", ["<s>", "▁Label:", "▁Negative"], "<s>"),
        ("mistral", ["<s>", "▁Label:", "▁Negative"], "<s>"),
        ("qwen2", ["Label", ":", "ĠNegative"], None),
        ("phi3", ["<s>", "▁Label:", "▁Negative"], "<s>"),
        ("gemma2", ["<bos>", "Label", ":", "▁Negative"], "<bos>"),  # as gemma-3-270m's tokenizer does
        ("gemma3", ["<bos>", "Label", ":", "▁Negative"], "<bos>"),
    ],
)
def test_family_conventions(family_name, first_tokens, bos):
    tokenizer = tiny_tokenizer(family_name)
    assert tokenizer.convert_ids_to_tokens(tokenizer("Label: Negative").input_ids) == first_tokens
    assert tokenizer.bos_token == bos
    family = next(f for f in FAMILIES if f.name == family_name)
    if family.bos is not None:  # the table's BOS names a token the tokenizer has
        assert getattr(tokenizer, family.bos) is not None


def test_sentencepiece_style_prefix_and_byte_fallback():
    tokenizer = tiny_tokenizer("llama")
    # Every separately tokenised piece starts a word ("▁"), as SentencePiece does.
    assert tokenizer.convert_ids_to_tokens(tokenizer("great", add_special_tokens=False).input_ids) == ["▁great"]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("é", add_special_tokens=False).input_ids)
    assert tokens == ["▁", "<0xC3>", "<0xA9>"]
    assert tokenizer.decode(tokenizer("Label: é", add_special_tokens=False).input_ids) == "Label: é"


@pytest.mark.parametrize("family_name", ["gemma2", "gemma3"])
def test_gemma_style_no_dummy_prefix(family_name):
    """Gemma's tokenizer (checked on gemma-3-270m): "▁" only where the text has a space, <bos> id 2, bytes as
    <0xXX>. So separately tokenised pieces come out as in natural text, and PieceTokenizer keeps them as they are."""
    from iclgd.prompts.sequences import PieceTokenizer, special_ids

    tokenizer = tiny_tokenizer(family_name)
    tokens = lambda ids: tokenizer.convert_ids_to_tokens(ids)  # noqa: E731
    assert tokens(tokenizer("great", add_special_tokens=False).input_ids) == ["great"]
    assert tokens(tokenizer(" great", add_special_tokens=False).input_ids) == ["▁great"]
    assert tokens(tokenizer("é", add_special_tokens=False).input_ids) == ["<0xC3>", "<0xA9>"]
    assert tokenizer.decode(tokenizer("Label: é", add_special_tokens=False).input_ids) == "Label: é"
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    pieces = PieceTokenizer(tokenizer)
    assert not pieces.adds_dummy_prefix
    assert tokens(pieces(" Positive")) == ["▁Positive"]
    assert tokens(pieces("Sentence: a movie Label:")) == ["Sentence", ":", "▁a", "▁movie", "▁Label", ":"]
    bos, sep = special_ids(tokenizer, "bos_token", "\n")
    assert tokens(bos) == ["<bos>"] and tokens(sep) == ["\n"]
    joined = bos + pieces("Sentence: a movie Label:") + pieces(" Positive") + sep + pieces("Sentence: a")
    assert joined == tokenizer("Sentence: a movie Label: Positive\nSentence: a").input_ids  # = natural text


def test_byte_level_round_trip():
    tokenizer = tiny_tokenizer("gpt2")
    text = "Review: a movie with ünïcode, 42 and\nnew lines Sentiment: Positive"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_vocab_words_extend_the_vocabulary():
    assert len(tiny_tokenizer("gpt2")(" zebra", add_special_tokens=False).input_ids) > 1
    assert len(tiny_tokenizer("gpt2", ["zebra"])(" zebra", add_special_tokens=False).input_ids) == 1


@pytest.mark.parametrize("family_name", ["gpt2", "llama"])
def test_deterministic(family_name):
    (a, tok_a), (b, tok_b) = tiny_model(family_name, seed=1), tiny_model(family_name, seed=1)
    c, _ = tiny_model(family_name, seed=2)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.get_input_embeddings().weight, c.get_input_embeddings().weight)


def test_tiny_gpt2_is_fast():
    tiny_model("gpt2")  # builds the cached tokenizer
    start = time.perf_counter()
    model, _ = tiny_model("gpt2", seed=3)
    assert time.perf_counter() - start < 1.0
    assert not model.training


def test_configs_exercise_windows_and_gqa():
    neo, _ = tiny_model("gpt_neo")
    assert neo.config.attention_layers == ["global", "local"] and neo.config.window_size == 4
    mistral, _ = tiny_model("mistral")
    assert mistral.config.sliding_window == 4 and mistral.config.num_key_value_heads == 2
    qwen, _ = tiny_model("qwen2")
    assert qwen.config.layer_types == ["full_attention", "sliding_attention"]
    assert qwen.model.layers[0].self_attn.q_proj.bias is not None
    gptj, _ = tiny_model("gptj")
    assert gptj.config.rotary_dim == 4 < gptj.config.n_embd // gptj.config.n_head
    phi3, _ = tiny_model("phi3")
    assert phi3.config.sliding_window == 4 and phi3.config.num_key_value_heads == 2
    assert phi3.config.rope_parameters["partial_rotary_factor"] == 0.5
    gemma3, _ = tiny_model("gemma3")
    assert gemma3.config.layer_types == ["full_attention", "sliding_attention"] and gemma3.config.sliding_window == 4
    assert gemma3.config.num_key_value_heads == 1 and gemma3.config.query_pre_attn_scalar != gemma3.config.head_dim
    assert gemma3.model.layers[0].self_attn.q_norm is not None
    gemma2, _ = tiny_model("gemma2")
    assert gemma2.config.layer_types == ["sliding_attention", "full_attention"]
    assert (gemma2.config.attn_logit_softcapping, gemma2.config.final_logit_softcapping) == (2.0, 3.0)


def test_unknown_family():
    with pytest.raises(UserError, match="unknown model family"):
        tiny_model("bert")


def test_config_overrides():
    model, tokenizer = tiny_model("qwen2", config_overrides={"num_hidden_layers": 3, "vocab_size": 1000})
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert model.get_input_embeddings().weight.shape[0] == 1000 > len(tokenizer)
