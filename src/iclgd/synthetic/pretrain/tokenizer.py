"""A word-level tokenizer for a synthetic corpus, GPT-2 conventions: ``<|endoftext|>`` is BOS and EOS.

Ids: 0 ``<|endoftext|>``, 1 ``<unk>``, 2 "\\n" (the default GPT-2 separator), then the corpus words. Text is
split on whitespace, so " L3" and "L3" are the same single token (label words carry a leading space) and a
piece tokenised alone gives the same ids as inside a longer text; "\\n" is an added token, kept as a token.
Nothing is added around a text (no BOS), as with GPT-2.
"""

from __future__ import annotations

from collections.abc import Sequence

from iclgd.errors import UserError

BOS_TEXT = "<|endoftext|>"
UNK_TEXT = "<unk>"
NEWLINE_TEXT = "\n"
SPECIALS = (BOS_TEXT, UNK_TEXT, NEWLINE_TEXT)
BOS_ID, UNK_ID, NEWLINE_ID = 0, 1, 2
FIRST_WORD_ID = len(SPECIALS)


def vocabulary(words: Sequence[str]) -> list[str]:
    """The token list: the specials, then ``words`` (ids in that order)."""
    bad = [w for w in words if not w or any(c.isspace() for c in w) or w in SPECIALS]
    if bad:
        raise UserError(f"corpus words must be non-empty, without whitespace and not special; got {bad[:5]}")
    if len(set(words)) != len(words):
        raise UserError("corpus words must be distinct")
    return [*SPECIALS, *words]


def build_tokenizer(words: Sequence[str]):
    """A ``PreTrainedTokenizerFast`` over the specials + ``words`` (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TEXT))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens([AddedToken(BOS_TEXT, special=True, normalized=False),
                                AddedToken(UNK_TEXT, special=True, normalized=False)])
    backend.add_tokens([AddedToken(NEWLINE_TEXT, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS_TEXT, eos_token=BOS_TEXT,
                                   unk_token=UNK_TEXT, model_max_length=1 << 30)
