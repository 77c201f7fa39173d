"""Tiny random models of every supported family, with in-memory tokenizers that follow each family's conventions.

    model, tokenizer = tiny_model("gpt2", seed=0)       # stock model (eager attention), eval mode
    save_tiny_model("llama", folder)                     # save_pretrained of both: load_model(folder) takes it

No vocabulary can be downloaded, so each tokenizer is trained in memory (``tokenizers``, deterministic) on a
built-in word list that makes every label word of the seven natural tasks one token (" Negative", " Positive", ...
for byte-level BPEs; "▁Negative" for the SentencePiece-style ones) plus the template words. Conventions:

| family                   | model                               | BOS the tokenizer adds | specials                |
|--------------------------|-------------------------------------|------------------------|-------------------------|
| gpt2 gpt_neo gptj gpt_neox | byte-level BPE, prefix spaces     | none                   | <|endoftext|> (bos=eos) |
| opt                      | byte-level BPE                      | </s> (OPT's BOS)       | <s> <pad> </s> <unk>    |
| xglm                     | byte-level BPE (fairseq-dense port) | none                   | <s> <pad> </s> <unk>    |
| llama mistral phi3       | SentencePiece-style BPE, "▁", bytes | <s>                    | <unk> <s> </s>          |
| qwen2                    | byte-level BPE                      | none (no BOS)          | <|endoftext|> (eos=pad) |
| gemma2 gemma3            | SentencePiece-style BPE, "▁" only   | <bos>                  | <pad> <eos> <bos> <unk> |
|                          | for spaces (no dummy prefix), bytes |                        | <mask> (ids 0-4)        |

Configs: 2 layers, width 32, 4 heads of 8 (GQA with 2 key heads for LLaMA, Mistral, Qwen2, Phi-3, Gemma 2; one
for Gemma 3, as in gemma-3-270m), 256 positions, initializer_range 0.1 (so that attention patterns are far from
uniform). GPT-Neo alternates global and local layers (window 4), Mistral and Phi-3 have a sliding window of 4 on
every layer, Qwen2, Gemma 2 and Gemma 3 on layer 0 or 1 (window 4), GPT-J rotates 4 of 8 dims per head, GPT-NeoX
and Phi-3 half of them. The Gemmas scale scores by query_pre_attn_scalar^-0.5 (not head_dim^-0.5): 1/4 for Gemma 3,
1 for Gemma 2, whose scores (up to ~2.5) and final logits are soft-capped at 2 and 3, in tanh's bend.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from iclgd.models.families import family_named

LABEL_WORDS = (
    "Negative", "Positive", "terrible", "bad", "neutral", "good", "great", "objective", "subjective",
    "World", "Sports", "Business", "Technology", "True", "False", "Neither", "Yes", "No",
)
TEMPLATE_WORDS = (
    "Sentence", "Label", "Review", "Sentiment", "Input", "Type", "Classify", "the", "news", "articles", "into",
    "categories", "of", "and", "Article", "Answer", "Question", "Passage", "or", "Yes", "No", "True", "False",
    "Neither",
)
COMMON_WORDS = (
    "a", "an", "is", "was", "it", "this", "that", "movie", "film", "not", "very", "to", "in", "for", "with", "on",
    "as", "but", "be", "are", "I", "you", "he", "she", "they", "we", "one", "all", "at", "by", "from", "his", "her",
    "its", "has", "have", "had", "more", "most", "so", "than", "too", "what", "who", "story", "plot", "fun", "best",
    "worst", "love", "like", "time", "new", "game", "team", "company", "market", "said", "year", "will", "can",
    "team", "win", "stock", "price", "science", "study", "people", "there", "about", "just", "no", "yes", "x", "y",
    "A", "B", "C", "D", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
)
PUNCTUATION = (":", ".", ",", "?", "!", "'", "-", "(", ")", '"', "\n")

_BYTE_LEVEL = ("gpt2", "gpt_neo", "gptj", "gpt_neox", "opt", "xglm", "qwen2")
_SENTENCEPIECE = ("llama", "mistral", "phi3")  # a dummy "▁" before every separately tokenised text
_GEMMA = ("gemma2", "gemma3")  # "▁" for spaces only, no dummy prefix (as gemma-3-270m's tokenizer.json)
_SPECIALS = {
    "gpt2": ["<|endoftext|>"], "gpt_neo": ["<|endoftext|>"], "gptj": ["<|endoftext|>"],
    "gpt_neox": ["<|endoftext|>"], "qwen2": ["<|endoftext|>"],
    "opt": ["<s>", "<pad>", "</s>", "<unk>"], "xglm": ["<s>", "<pad>", "</s>", "<unk>"],
    "llama": ["<unk>", "<s>", "</s>"], "mistral": ["<unk>", "<s>", "</s>"], "phi3": ["<unk>", "<s>", "</s>"],
    "gemma2": ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], "gemma3": ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
}


def _corpus(vocab_words: tuple[str, ...]) -> list[str]:
    words = list(dict.fromkeys(LABEL_WORDS + TEMPLATE_WORDS + COMMON_WORDS + vocab_words))
    # Each word alone (sequence start) and after a space, and each punctuation mark after a word.
    lines = list(words) + [" " + " ".join(words)] + [w + p for w in ("Label", "Answer", "Sentiment") for p in ":"]
    return lines + ["".join(PUNCTUATION)]


@lru_cache(maxsize=32)
def _backend_json(family_name: str, vocab_words: tuple[str, ...]) -> str:
    """The tokenizer.json text of a family's tiny tokenizer (cached: training takes a few ms, once)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = _SPECIALS[family_name]
    if family_name in _BYTE_LEVEL:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(_corpus(vocab_words), trainer)
        if family_name == "opt":  # OPT's tokenizer prepends </s>, its BOS
            tokenizer.post_processor = processors.TemplateProcessing(
                single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))])
        else:
            tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        return tokenizer.to_str()
    # SentencePiece style: "▁" marks a word start. LLaMA's prepends it to every separately tokenised text; Gemma's
    # only replaces spaces (no dummy prefix) and splits punctuation off words ("Label", ":").
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    if family_name in _GEMMA:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
            pre_tokenizers.Punctuation("isolated")])
        tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        bos = "<bos>"
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tokenizer.decoder = decoders.Sequence([
            decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        bos = "<s>"
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(_corpus(vocab_words), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    # Byte fallback, as in LLaMA: characters outside the vocabulary become <0xXX> tokens.
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    data["model"]["byte_fallback"] = True
    return json.dumps(data)


def tiny_tokenizer(family_name: str, vocab_words: list[str] | None = None):
    """A PreTrainedTokenizerFast following the family's conventions (see the module docstring)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_backend_json(family_name, tuple(vocab_words or ())))
    specials: dict[str, str | None]
    if family_name in ("gpt2", "gpt_neo", "gptj", "gpt_neox"):
        specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    elif family_name == "qwen2":
        specials = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": None}
    elif family_name == "opt":
        specials = {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    elif family_name in _GEMMA:
        specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                    "mask_token": "<mask>"}
    elif family_name == "xglm":
        specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                    "sep_token": "</s>"}
    else:
        specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in specials.items() if v is not None})


def tiny_config(family_name: str, n_tokens: int, special_ids: dict[str, int | None], **overrides):
    """A tiny random config of the family (see the module docstring); ``overrides`` replace config arguments
    (e.g. a GPT-2-small shape for benchmarks: ``n_embd=768, n_layer=12, n_head=12, n_positions=2048``)."""
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GPT2Config,
        GPTJConfig,
        GPTNeoConfig,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Phi3Config,
        Qwen2Config,
        XGLMConfig,
    )

    ids = {k: v for k, v in special_ids.items() if v is not None}
    vocab_size = n_tokens
    width, heads, layers, positions, init = 32, 4, 2, 256, 0.1
    gpt_like = dict(vocab_size=vocab_size, n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                    initializer_range=init)
    llama_like = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=positions,
                      initializer_range=init)
    gemma_like = dict(llama_like, head_dim=width // heads, query_pre_attn_scalar=16, sliding_window=4)
    choices = {
        "gpt2": (GPT2Config, gpt_like),
        "gpt_neo": (GPTNeoConfig, dict(vocab_size=vocab_size, max_position_embeddings=positions, hidden_size=width,
                                       num_layers=layers, num_heads=heads, attention_types=[[["global", "local"], 1]],
                                       window_size=4, intermediate_size=2 * width, initializer_range=init)),
        "gptj": (GPTJConfig, dict(gpt_like, rotary_dim=4, n_inner=2 * width)),
        "opt": (OPTConfig, dict(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, ffn_dim=2 * width,
                                num_attention_heads=heads, max_position_embeddings=positions,
                                word_embed_proj_dim=width, init_std=init)),
        "xglm": (XGLMConfig, dict(vocab_size=vocab_size, d_model=width, num_layers=layers, attention_heads=heads,
                                  ffn_dim=2 * width, max_position_embeddings=positions, init_std=init)),
        "gpt_neox": (GPTNeoXConfig, dict(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=2 * width,
                                         max_position_embeddings=positions, rotary_pct=0.5, initializer_range=init)),
        "llama": (LlamaConfig, llama_like),
        "mistral": (MistralConfig, dict(llama_like, sliding_window=4)),
        "qwen2": (Qwen2Config, dict(llama_like, use_sliding_window=True, sliding_window=4, max_window_layers=1)),
        "phi3": (Phi3Config, dict(llama_like, sliding_window=4, partial_rotary_factor=0.5, pad_token_id=None)),
        "gemma2": (Gemma2Config, dict(gemma_like, layer_types=["sliding_attention", "full_attention"],
                                      query_pre_attn_scalar=1, attn_logit_softcapping=2.0,
                                      final_logit_softcapping=3.0)),
        "gemma3": (Gemma3TextConfig, dict(gemma_like, num_key_value_heads=1,
                                          layer_types=["full_attention", "sliding_attention"])),
    }
    if family_name not in choices:
        raise ValueError(f"no tiny config for family {family_name!r}")
    config_class, arguments = choices[family_name]
    return config_class(**{**arguments, **ids, **overrides})


def tiny_model(family_name: str, *, seed: int = 0, vocab_words: list[str] | None = None,
               attn_implementation: str = "eager", config_overrides: dict | None = None) -> tuple[nn.Module, object]:
    """A tiny random model of the family (stock transformers, eval mode) and its tokenizer. Same seed, same weights.

    ``config_overrides`` replace config arguments (a bigger shape for benchmarks; a ``vocab_size`` above the
    tokenizer's leaves the extra rows unused)."""
    from transformers import AutoModelForCausalLM

    family_named(family_name)  # UserError for an unknown family name
    tokenizer = tiny_tokenizer(family_name, vocab_words)
    special_ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    config = tiny_config(family_name, len(tokenizer), special_ids, **(config_overrides or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval(), tokenizer


def save_tiny_model(family_name: str, folder: str | Path, *, seed: int = 0,
                    vocab_words: list[str] | None = None) -> Path:
    """Save a tiny model and its tokenizer with ``save_pretrained`` (a folder :func:`load_model` accepts);
    ``vocab_words`` become single tokens of its tokenizer (e.g. a task's label words)."""
    folder = Path(folder)
    model, tokenizer = tiny_model(family_name, seed=seed, vocab_words=vocab_words)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
