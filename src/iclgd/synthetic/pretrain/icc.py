"""In-context classification ("icc"): every sequence draws its own mapping from inputs to labels.

A sequence is [BOS] x_1 y_1 SEP x_2 y_2 SEP ... with one-token inputs x ("x0".."x31") and one-token labels
y ("L0".."L7"): exactly iclgd's ICL layout for the task template "{text}" and label words " L<j>", so the
prediction of y_{k+1} after k demonstrations is what ``iclgd icl-curve`` and ``iclgd compare`` measure.
The label follows its input directly: the lookup "find the earlier x_i equal to x, copy the token after
it" is one hop (an induction head); a template word between input and label would make it two.

Per sequence (Chan et al. 2022; Reddy 2023: bursty sequences, the mapping only readable in context):
- ``n_way`` labels drawn from the L labels, ``inputs_per_class`` inputs per label drawn from the inputs,
  each demonstration an input drawn uniformly from those (so inputs repeat within the sequence); with
  ``label_draw`` "uniform" each input's label is instead drawn from the sequence's n_way labels independently
  (prior sequences keep their fixed labels).
  Balanced labels leave a shortcut that competes with induction: with one input per label, the label the query's
  input does NOT have is the other input's, so a head that attends to the labels of the other inputs (an
  anti-induction head) answers as well as an induction head, and it still pays partly with more inputs per label;
  independent labels make the other inputs' labels carry nothing about the query's;
- with probability ``p_prior`` a "prior" sequence instead: inputs only from the first ``n_prior_inputs``,
  each with its FIXED prior label L(i mod n_prior_labels). Those inputs also appear in ordinary sequences
  with random labels, so the model learns the prior in its weights (zero-shot above chance on them) and
  learns to let the context override it;
- the evaluation mappings (``heldout``) with ``heldout_rule`` "pairs" (icc) are held out: a sequence showing
  two of a mapping's (input, label) pairs is drawn again. That rejection depends on the labels, so a held-out
  pair occurs about 11% less often than the input's other labels (over 60 000 mappings: 0.113 vs 0.127,
  mean over icc-heldout's six pairs), an in-weight bias against the held-out answer. With "none"
  (icc-exemplars) nothing is rejected: the evaluation mapping is drawn like any other (0.4% of sequences
  show two of its pairs, as for any mapping of its shape), so the labels of every input without a prior are
  exactly uniform and zero-shot is at chance; what is held out is the queries, exemplars the demos never
  use (below). Rules that hide the mapping without biasing the labels change what co-occurs instead, and
  were measured worse on icc-exemplars (seed 0): with no two held-out inputs in a sequence, or none grouped
  as the mapping groups them, ICL on the evaluation mapping did not appear within 3 500 steps (the pair
  rule: zero-shot 0.000, every query answered with the other label; no rule: ICL by step 1 250);
- after each demonstration, with probability ``p_echo``, an echo token e_i of its input ("x7" -> "e7")
  takes the place of SEP (x_i y_i e_i x_{i+1} ...). The echo is predictable only from the token before
  the label, and at a label position the model cannot know whether an echo or SEP comes next: this
  rewards a previous-token head at every label position, the first half of the induction circuit, which
  otherwise pays off only once the second half exists (the long plateau before ICL appears). Echoes are
  their own tokens so that "attend to an earlier copy of x_test" finds inputs only (an echo equal to the
  input would be a shortcut that works only where echoes are). Evaluation prompts contain no echo.
- with ``exemplars_per_input`` E > 1 the inputs are latent (the "classes" of Chan et al. 2022): input i shows as
  one of E exemplar tokens "x<i>_<j>", drawn uniformly per demonstration, so within a sequence a label's input
  appears as different tokens. Which exemplars belong together is fixed across the corpus and learnt in the
  weights (the echo names the latent input); the label of the query is read from demos of other exemplars of
  its input. The held-out tasks take their demos from each input's first ``demo_exemplars`` exemplars and their
  queries from the rest, so no query is ever a demo: a mapping of 6 inputs has 6 (E - demo_exemplars) distinct
  query tokens. The ``icc-exemplars`` corpus is this with E = 16, 4 of them for demos (72 query tokens).
The loss is on the predictable targets (``loss_positions``): each label and the token after it (SEP or
the echo); inputs are uniform draws and carry no signal.
A batch for step s is a pure function of (seed, s): ``default_rng([seed, s])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from iclgd.errors import UserError
from iclgd.synthetic.pretrain.tokenizer import BOS_ID, FIRST_WORD_ID, NEWLINE_ID

# Held-out mappings shipped as evaluation tasks (input name -> label word, no leading space).
HELDOUT_MAPPINGS: dict[str, dict[str, str]] = {
    "icc-heldout": {"x26": "L1", "x27": "L1", "x28": "L1", "x29": "L6", "x30": "L6", "x31": "L6"},
}
EXEMPLAR_HELDOUT_MAPPINGS: dict[str, dict[str, str]] = {"icc-exemplars-heldout": dict(HELDOUT_MAPPINGS["icc-heldout"])}


@dataclass(frozen=True)
class ICC:
    """The icc corpus; ``heldout`` maps a task name to its held-out mapping (input name "x<i>" -> label word)."""

    n_inputs: int = 32
    n_labels: int = 8
    n_way: tuple[int, ...] = (2,)
    inputs_per_class: tuple[int, ...] = (1, 2, 3)
    n_prior_inputs: int = 16
    n_prior_labels: int = 4
    p_prior: float = 0.25
    p_echo: float = 0.25
    exemplars_per_input: int = 1
    demo_exemplars: int = 1
    heldout_rule: str = "pairs"
    label_draw: str = "balanced"
    heldout: dict[str, dict[str, str]] = field(default_factory=lambda: dict(HELDOUT_MAPPINGS), hash=False)

    def __post_init__(self) -> None:
        if self.n_inputs < 2 or self.n_labels < 2:
            raise UserError(f"icc needs at least 2 inputs and 2 labels; got n_inputs={self.n_inputs}, "
                            f"n_labels={self.n_labels}")
        if not self.n_way or min(self.n_way) < 2 or max(self.n_way) > self.n_labels:
            raise UserError(f"icc n_way {list(self.n_way)} must lie in 2..n_labels={self.n_labels}")
        if not self.inputs_per_class or min(self.inputs_per_class) < 1:
            raise UserError(f"icc inputs_per_class {list(self.inputs_per_class)} must be >= 1")
        if max(self.n_way) * max(self.inputs_per_class) > self.n_inputs:
            raise UserError(f"icc: n_way x inputs_per_class = {max(self.n_way) * max(self.inputs_per_class)} "
                            f"inputs per sequence but only n_inputs={self.n_inputs}; raise n_inputs")
        for name in ("p_prior", "p_echo"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"icc {name} {getattr(self, name)} must be a probability in [0, 1]")
        if self.p_prior > 0:
            if not 2 <= self.n_prior_labels <= min(self.n_labels, self.n_prior_inputs):
                raise UserError(f"icc n_prior_labels {self.n_prior_labels} must lie in 2..min(n_labels, "
                                f"n_prior_inputs) = {min(self.n_labels, self.n_prior_inputs)}")
            if self.n_prior_inputs > self.n_inputs:
                raise UserError(f"icc n_prior_inputs {self.n_prior_inputs} exceeds n_inputs {self.n_inputs}")
        if self.label_draw not in ("balanced", "uniform"):
            raise UserError(f"icc label_draw {self.label_draw!r} must be 'balanced' (inputs_per_class inputs per "
                            "label) or 'uniform' (each input's label drawn from the sequence's n_way labels)")
        if self.heldout_rule not in ("pairs", "none"):
            raise UserError(f"icc heldout_rule {self.heldout_rule!r} must be 'pairs' (no two pairs of an evaluation "
                            "mapping in one sequence) or 'none'")
        for name in ("exemplars_per_input", "demo_exemplars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"icc {name} {value!r} must be a whole number >= 1")
        if self.exemplars_per_input == 1 and self.demo_exemplars != 1:
            raise UserError(f"icc demo_exemplars {self.demo_exemplars} needs exemplars_per_input > 1 (one exemplar "
                            "serves demos and queries): set demo_exemplars: 1, or more exemplars per input")
        if self.exemplars_per_input > 1 and not 1 <= self.demo_exemplars < self.exemplars_per_input:
            raise UserError(f"icc demo_exemplars {self.demo_exemplars} must lie in 1..exemplars_per_input - 1 = "
                            f"{self.exemplars_per_input - 1}: the rest are the held-out queries")
        names = {f"x{i}" for i in range(self.n_inputs)} | {f"L{j}" for j in range(self.n_labels)}
        for name, mapping in self.heldout.items():
            unknown = [w for pair in mapping.items() for w in pair if w not in names]
            if unknown:
                raise UserError(f"icc held-out mapping {name!r} uses names {unknown}: a mapping names latent inputs "
                                f"x0..x{self.n_inputs - 1} (not their exemplars) and labels L0..L{self.n_labels - 1}")

    @cached_property
    def words(self) -> tuple[str, ...]:
        """Vocabulary words: inputs x0.. (exemplars x0_0, x0_1, .. when E > 1), labels L0.., then echoes e0..
        (when p_echo > 0)."""
        echoes = [f"e{i}" for i in range(self.n_inputs)] if self.p_echo > 0 else []
        inputs = [self.input_word(i, j) for i in range(self.n_inputs) for j in range(self.exemplars_per_input)]
        return (*inputs, *(f"L{j}" for j in range(self.n_labels)), *echoes)

    def input_word(self, i: int, exemplar: int = 0) -> str:
        return f"x{i}" if self.exemplars_per_input == 1 else f"x{i}_{exemplar}"

    @cached_property
    def word_ids(self) -> dict[str, int]:
        return {w: FIRST_WORD_ID + i for i, w in enumerate(self.words)}

    def input_id(self, i: np.ndarray | int, exemplar: np.ndarray | int = 0) -> np.ndarray | int:
        return FIRST_WORD_ID + i * self.exemplars_per_input + exemplar

    def latent_input(self, ids: np.ndarray) -> np.ndarray:
        """The latent input index of each input token id (meaningless for other tokens)."""
        return (np.asarray(ids) - FIRST_WORD_ID) // self.exemplars_per_input

    def label_id(self, j: np.ndarray | int) -> np.ndarray | int:
        return FIRST_WORD_ID + self.n_inputs * self.exemplars_per_input + j

    def echo_id(self, i: np.ndarray | int) -> np.ndarray | int:
        return FIRST_WORD_ID + self.n_inputs * self.exemplars_per_input + self.n_labels + i

    def prior_label(self, i: int) -> int:
        """The prior label index of prior input i: i mod n_prior_labels."""
        return i % self.n_prior_labels

    @cached_property
    def _heldout_pairs(self) -> list[set[tuple[int, int]]]:
        """Each held-out mapping as a set of (input index, label index)."""
        return [{(int(x[1:]), int(y[1:])) for x, y in mapping.items()} for mapping in self.heldout.values()]

    def sequence_length(self, n_demos: int) -> int:
        """Tokens of [BOS] + n_demos demonstrations (input, label, SEP)."""
        return 1 + 3 * n_demos

    def _mapping(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One sequence's inputs and their labels (index arrays of equal length)."""
        if self.p_prior > 0 and rng.random() < self.p_prior:
            n_way = int(rng.choice([n for n in self.n_way if n <= self.n_prior_labels] or [2]))
            labels = rng.choice(self.n_prior_labels, size=n_way, replace=False)
            inputs, targets = [], []
            for label in labels:
                members = np.arange(label, self.n_prior_inputs, self.n_prior_labels)
                m = min(int(rng.choice(self.inputs_per_class)), len(members))
                inputs.extend(rng.choice(members, size=m, replace=False))
                targets.extend([label] * m)
            return np.asarray(inputs), np.asarray(targets)
        n_way = int(rng.choice(self.n_way))
        m = int(rng.choice(self.inputs_per_class))
        labels = rng.choice(self.n_labels, size=n_way, replace=False)
        inputs = rng.choice(self.n_inputs, size=n_way * m, replace=False)
        if self.label_draw == "uniform":
            return inputs, rng.choice(labels, size=n_way * m)
        return inputs, np.repeat(labels, m)

    def _shows_heldout(self, inputs: np.ndarray, targets: np.ndarray) -> bool:
        """Whether a sequence's mapping shows too much of a held-out mapping (see ``heldout_rule``)."""
        if self.heldout_rule == "none":
            return False
        pairs = set(zip(inputs.tolist(), targets.tolist(), strict=True))
        return any(len(pairs & heldout) >= 2 for heldout in self._heldout_pairs)

    def sequence(self, rng: np.random.Generator, n_demos: int) -> np.ndarray:
        """[BOS] x_1 y_1 SEP ... x_n y_n SEP as token ids, length 1 + 3 n_demos (an echo e_i in place of some SEP)."""
        inputs, targets = self._mapping(rng)
        while self._shows_heldout(inputs, targets):
            inputs, targets = self._mapping(rng)
        pick = rng.integers(0, len(inputs), size=n_demos)
        ids = np.full(self.sequence_length(n_demos), NEWLINE_ID, dtype=np.int64)
        ids[0] = BOS_ID
        ids[2::3] = self.label_id(targets[pick])
        echo = rng.random(n_demos) < self.p_echo
        ids[3::3][echo] = self.echo_id(inputs[pick][echo])
        # drawn last, so a corpus of one exemplar per input keeps the batches it had before exemplars existed
        exemplar = rng.integers(0, self.exemplars_per_input, size=n_demos) if self.exemplars_per_input > 1 else 0
        ids[1::3] = self.input_id(inputs[pick], exemplar)
        return ids

    def pretraining_batch(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """(B, length) token ids: sequences of ceil((length - 1) / 3) demonstrations, cut to ``length``."""
        n_demos = -(-(length - 1) // 3)
        return np.stack([self.sequence(rng, n_demos)[:length] for _ in range(batch_size)])

    def label_positions(self, length: int) -> np.ndarray:
        """Target indices t (target t is ids[t + 1]) that are labels: ids[2::3], i.e. t = 1, 4, 7, ..."""
        return np.arange(1, length - 1, 3)

    def loss_positions(self, length: int) -> np.ndarray:
        """Target indices of the predictable tokens: each label and the token after it (t = 1, 2, 4, 5, ...)."""
        targets = np.arange(length - 1)
        return targets[targets % 3 != 0]

    def heldout_words(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """The held-out mapping ``name`` as (demo words -> label word, query words -> label word): its inputs'
        first demo_exemplars exemplars and the rest (with one exemplar per input, the same mapping twice)."""
        mapping = self.heldout[name]
        if self.exemplars_per_input == 1:
            return dict(mapping), dict(mapping)
        demos, queries = {}, {}
        for x, y in mapping.items():
            for j in range(self.exemplars_per_input):
                (demos if j < self.demo_exemplars else queries)[self.input_word(int(x[1:]), j)] = y
        return demos, queries

    def heldout_prompts(self, rng: np.random.Generator, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n evaluation prompts of the first held-out mapping, as icl-curve lays them out: token ids
        (n, 3k + 2) = [BOS] (x y SEP) * k x_test with uniform draws of its demo and query words (heldout_words),
        the gold label id of each, and the mapping's label ids (the candidates)."""
        demos, queries = self.heldout_words(next(iter(self.heldout)))
        demo_x, demo_y, query_x, query_y = (np.array([self.word_ids[w] for w in words])
                                            for words in (demos, demos.values(), queries, queries.values()))
        pick, query = rng.integers(0, len(demo_x), size=(n, k)), rng.integers(0, len(query_x), size=n)
        ids = np.full((n, 3 * k + 2), NEWLINE_ID, dtype=np.int64)
        ids[:, 0] = BOS_ID
        ids[:, 1:3 * k + 1:3], ids[:, 2:3 * k + 1:3] = demo_x[pick], demo_y[pick]
        ids[:, -1] = query_x[query]
        return ids, query_y[query], np.unique(demo_y)


@dataclass(frozen=True)
class ICCExemplars(ICC):
    """icc with latent inputs: each of the 32 inputs shows as one of 16 exemplar tokens; the held-out task's
    demos use 4 exemplars per input and its queries the other 12 (72 distinct query tokens, none a demo). Its
    mapping is not held out from pretraining (heldout_rule "none"), so the labels of every input without a prior
    (x16..x31, the task's among them) are exactly uniform."""

    exemplars_per_input: int = 16
    demo_exemplars: int = 4
    heldout_rule: str = "none"
    heldout: dict[str, dict[str, str]] = field(default_factory=lambda: dict(EXEMPLAR_HELDOUT_MAPPINGS), hash=False)
