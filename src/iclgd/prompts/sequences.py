"""Token sequences exactly as the protocol builds them (spec/protocols.md, "Sequences").

    ZS / FT-eval:  [BOS] test_input label_0
    ICL:           [BOS] demo_1 SEP demo_2 SEP ... demo_k SEP | test_input label_0
                   '------------ the prefix, encoded once -----' '--- the query ---'
    FT training:   [BOS] demo_j                 (demo = input + label word)

Pieces (template-filled input, label word, separator) are tokenised separately and concatenated; a
joined string is never tokenised. SentencePiece tokenizers put "▁" before every separately tokenised
piece. Every piece is tokenised behind a newline anchor whose tokens are then dropped, so a label word
" Negative" gives "▁Negative" and an input after a newline separator starts without "▁", as in natural
text. The one place this differs from natural text is the very first piece after BOS; it is kept so,
because the test input and the demonstrations must be the same tokens in the ZS, ICL and FT sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from iclgd.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_ANCHOR = "\n"


class PieceTokenizer:
    """Tokenises pieces of a prompt separately, the way the protocol requires."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        probe = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"])
        # SentencePiece-style tokenizers add a dummy "▁" prefix to every separately encoded string.
        self.adds_dummy_prefix = bool(probe) and probe[0].startswith("▁")
        self._anchor_ids = self._encode(_ANCHOR)
        self._cache: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self._tokenize(text)
        return self._cache[text]

    def _tokenize(self, text: str) -> list[int]:
        if not self.adds_dummy_prefix:
            return self._encode(text)
        anchored = self._encode(_ANCHOR + text)
        if anchored[: len(self._anchor_ids)] == self._anchor_ids:
            return anchored[len(self._anchor_ids) :]
        return self._encode(text)


def special_ids(tokenizer: PreTrainedTokenizerBase, bos: str | None, sep: str) -> tuple[list[int], list[int]]:
    """BOS ids ([] for none) and separator ids. ``bos`` is "bos_token", "eos_token", None or a literal text."""
    if bos is None or bos == "none":
        bos_ids: list[int] = []
    elif bos in ("bos_token", "eos_token"):
        token_id = getattr(tokenizer, f"{bos}_id")
        if token_id is None:
            raise UserError(f"the tokenizer has no {bos}: set `bos:` in the config (a token text, or none)")
        bos_ids = [token_id]
    else:
        bos_ids = list(tokenizer(bos, add_special_tokens=False)["input_ids"])
        if len(bos_ids) != 1:  # finetuning drops the BOS from its loss as one token; a longer one misaligns
            shown = tokenizer.convert_ids_to_tokens(bos_ids)
            raise UserError(f"BOS text {bos!r} is {len(bos_ids)} tokens {shown}, but the BOS must be one token: "
                            "give a single-token text (e.g. the tokenizer's own BOS), or none")
    sep_ids = list(tokenizer(sep, add_special_tokens=False)["input_ids"])
    if not sep_ids:
        raise UserError(f"separator {sep!r} tokenises to nothing: set `separator:` in the config")
    return bos_ids, sep_ids


@dataclass(frozen=True)
class Query:
    """One eval example as token ids: the test input and the label candidate appended to it."""

    input_ids: list[int]  # test input tokens + label candidate 0
    n_input: int  # number of test-input tokens
    gold: int  # index of the gold label among the candidates

    @property
    def prompt_ids(self) -> list[int]:
        """The test input tokens alone, without the label candidate."""
        return self.input_ids[: self.n_input]

    @property
    def prompt_end(self) -> int:
        """Index (in input_ids) of the last prompt token, whose next-token distribution scores the labels."""
        return self.n_input - 1

    def without_first(self, n: int) -> Query:
        """The same query without its first ``n`` tokens (moved into a shared prefix by the caller)."""
        if not 0 <= n < self.n_input:
            raise ValueError(f"a query keeps at least its last prompt token: cannot drop {n} of {self.n_input}")
        return Query(self.input_ids[n:], self.n_input - n, self.gold)


def shared_start(queries: Sequence[Query]) -> list[int]:
    """The tokens every query begins with (a template's "Review:"), leaving each query its last prompt token.

    With causal attention these tokens' keys and values do not depend on what follows them, so a pass may run
    them once, at the end of the shared prefix, instead of once per query: each query scores the same, up to float
    rounding."""
    if not queries:
        return []
    first = queries[0].input_ids
    limit = min(q.n_input for q in queries) - 1
    n = 0
    while n < limit and all(q.input_ids[n] == first[n] for q in queries):
        n += 1
    return first[:n]


@dataclass
class Prompts:
    """Everything one unit feeds the model, built once."""

    bos_ids: list[int]
    sep_ids: list[int]
    label_ids: list[list[int]]  # per candidate (label words in the task's order)
    demo_ids: list[list[int]]  # per used demonstration: input + label word (no BOS, no SEP)
    demo_labels: list[int]
    queries: list[Query]
    requested_k: int
    prefix_ids: list[int] = field(default_factory=list)  # [BOS] demo SEP ... demo SEP
    demo_positions: list[int] = field(default_factory=list)  # prefix positions of demo tokens (no BOS/SEP)

    @property
    def true_k(self) -> int:
        return len(self.demo_ids)

    def reordered(self, order: Sequence[int]) -> Prompts:
        """The same prompts with the used demos in another order (the prefix laid out again)."""
        demo_ids = [self.demo_ids[i] for i in order]
        prompts = Prompts(self.bos_ids, self.sep_ids, self.label_ids, demo_ids,
                          [self.demo_labels[i] for i in order], self.queries, self.requested_k)
        prompts.layout_prefix()
        return prompts

    def layout_prefix(self) -> None:
        """[BOS] demo SEP ... demo SEP, and where the demo tokens sit in it."""
        prefix, positions = list(self.bos_ids), []
        for demo in self.demo_ids:
            positions.extend(range(len(prefix), len(prefix) + len(demo)))
            prefix += demo + self.sep_ids
        self.prefix_ids, self.demo_positions = prefix, positions

    def training_sequences(self) -> list[list[int]]:
        """FT training sequences, in ICL order: [BOS] input label."""
        return [self.bos_ids + demo for demo in self.demo_ids]

    def training_label_lengths(self) -> list[int]:
        """How many tokens end each training sequence as its label word (the label-token loss's targets)."""
        return [len(self.label_ids[label]) for label in self.demo_labels]


def true_k(demo_lengths: Sequence[int], prefix_start: int, max_eval_len: int, max_context: int) -> int:
    """How many demos fit: append in order while len(prefix) + len(next demo + SEP) + max_eval_len < max_context.

    ``max_eval_len`` is the longest eval sequence with its BOS and label candidate, as Dai's code counts it
    (so the rule keeps one token more room than the ICL sequence needs when there is a BOS).

    The first demo that does not fit ends the prefix (later, shorter demos are not tried).
    """
    length, k = prefix_start, 0
    for demo_length in demo_lengths:
        if length + demo_length + max_eval_len >= max_context:
            break
        length += demo_length
        k += 1
    return k


def check_label_ids(tokenizer: PreTrainedTokenizerBase, label_words: Sequence[str], label_ids: Sequence[list[int]], *,
                    single_token: bool) -> None:
    """Label words must score apart: each non-empty, one token where the metrics need it, none the unknown
    token, and no two scored alike (two words on the same token tie on every example and one class wins)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for word, ids in zip(label_words, label_ids, strict=True):
        if not ids:
            raise UserError(f"label word {word!r} tokenises to nothing: fix the task's label words")
        if single_token and len(ids) != 1:
            shown = tokenizer.convert_ids_to_tokens(ids)
            raise UserError(
                f"label word {word!r} is {len(ids)} tokens {shown} but the analysis metrics need one token: "
                "choose single-token label words in the task file (doc_to_choice), e.g. with a leading space"
            )
        if unk is not None and unk in ids:
            raise UserError(
                f"label word {word!r} maps to the unknown token {tokenizer.unk_token!r}: the model's vocabulary "
                "lacks it; choose label words this tokenizer knows (doc_to_choice in the task file)"
            )
    scored = [tuple(ids) for ids in label_ids]
    for i, ids in enumerate(scored):
        if ids in scored[:i]:
            other = label_words[scored.index(ids)]
            raise UserError(
                f"label words {other!r} and {label_words[i]!r} tokenise to the same token(s) "
                f"{tokenizer.convert_ids_to_tokens(list(ids))}: they would tie on every example; choose distinct "
                "label words in the task file"
            )


def check_known(tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]) -> None:
    """An input the model sees only as unknown tokens carries nothing (a task built for another vocabulary, e.g.
    icc-exemplars-heldout on icc-gpt2): refused, rather than scored at chance."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids and all(i == unk for i in ids):
        raise UserError(f"input {text!r} maps only to the unknown token {tokenizer.unk_token!r}: the model's "
                        "vocabulary lacks it; use a task made for this model (for iclgd's own models, the task of "
                        "the corpus it was pretrained on)")


def prompt_tokens(tokenizer: PreTrainedTokenizerBase, label_words: Sequence[str], bos: str | None, sep: str, *,
                  single_token_labels: bool = True) -> tuple[list[int], list[int], list[list[int]], PieceTokenizer]:
    """The BOS ids, separator ids and label words' ids of a tokenizer and a task's words, checked before any row is
    read (what :func:`build_prompts` refuses about them; a sweep checks every (model, task) pair with it before its
    first unit), and the piece tokenizer that made them."""
    pieces = PieceTokenizer(tokenizer)
    bos_ids, sep_ids = special_ids(tokenizer, bos, sep)
    label_ids = [pieces(word) for word in label_words]
    check_label_ids(tokenizer, label_words, label_ids, single_token=single_token_labels)
    return bos_ids, sep_ids, label_ids, pieces


def build_prompts(
    tokenizer: PreTrainedTokenizerBase,
    *,
    demo_inputs: Sequence[str],
    demo_labels: Sequence[int],
    eval_inputs: Sequence[str],
    eval_labels: Sequence[int],
    label_words: Sequence[str],
    bos: str | None,
    sep: str,
    max_context: int,
    single_token_labels: bool = True,
) -> Prompts:
    """Tokenise demos and eval examples, choose true k, and lay out the shared prefix."""
    bos_ids, sep_ids, label_ids, pieces = prompt_tokens(tokenizer, label_words, bos, sep,
                                                        single_token_labels=single_token_labels)
    queries = []
    for text, gold in zip(eval_inputs, eval_labels, strict=True):
        input_ids = pieces(text)
        if not input_ids:
            raise UserError("an eval example renders to no tokens: check the task's template and fields")
        check_known(tokenizer, text, input_ids)
        queries.append(Query(input_ids + label_ids[0], len(input_ids), gold))
    # The longest eval sequence as Dai's code measures it: [BOS] input label, BOS included; with the longest label
    # candidate, which a multi-token scoring pass appends.
    longest_label = max(len(ids) for ids in label_ids)
    max_eval_len = len(bos_ids) + max(q.n_input for q in queries) + longest_label

    demos = []
    for text, label in zip(demo_inputs, demo_labels, strict=True):
        input_ids = pieces(text)
        check_known(tokenizer, text, input_ids)
        demos.append(input_ids + label_ids[label])
    k = true_k([len(d) + len(sep_ids) for d in demos], len(bos_ids), max_eval_len, max_context)
    if k == 0:
        first = len(demos[0]) + len(sep_ids) if demos else 0
        raise UserError(
            f"no demonstration fits the context of {max_context} tokens next to the longest eval example "
            f"({max_eval_len} tokens): the first sampled demonstration takes {first} (demos are kept in their sampled "
            "order); use a model with a longer context, shorter rows or template, or fewer eval rows"
        )
    prompts = Prompts(
        bos_ids=bos_ids,
        sep_ids=sep_ids,
        label_ids=label_ids,
        demo_ids=demos[:k],
        demo_labels=list(demo_labels[:k]),
        queries=queries,
        requested_k=len(demos),
    )
    prompts.layout_prefix()
    return prompts
