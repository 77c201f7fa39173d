"""GINC (Xie et al. 2022, "An Explanation of In-context Learning as Implicit Bayesian Inference").

The generator of the published code (github.com/p-lambda/incontext-learning, generate_data.py), with the
settings of its released dataset (scripts/runner.sh, data/GINC_trans0.1_start10.0_nsymbols50_nvalues10_nslots10
_vic0.9_nhmms10: trans 0.1, start 10.0, 50 symbols, 10 values, 10 slots, vic 0.9, 10 HMMs; the argparse
defaults of generate_data.py itself are 10 symbols, 5 values, 5 slots, vic 0.8, 100 HMMs):
- vocabulary: "/" (the delimiter) + the first n_symbols - 1 letter strings "a", ..., "z", "ab", "ac", ...;
- a hidden state is (value v, slot s), index h = v * n_slots + s ("values" are the paper's entities,
  "slots" its properties); it emits symbol all_values[v, s] deterministically; slot 0 emits "/";
- a concept (HMM) = start distribution softmax((u - 0.5) / start_temp), u ~ U(0, 1)^(n_values n_slots),
  and transitions T[(v, s), (v', s')] = A_value[v, v'] * A_slot[s, s'] where
  A_slot = Σ_p softmax((u - 0.5) / trans_temp)_p P_p over n_slots random permutation matrices P_p (one per
  concept), A_value = (1 - vic) * (the same mixture over n_values permutations, shared by all concepts) + vic * I;
- the first n_hmms // 2 concepts are "in distribution": pretraining documents are chains of one concept
  drawn uniformly among them;
- a prompt ("ID_sample") fixes a concept and a start slot s0 in 1..n_slots-1; each example starts at
  (v ~ U, s0) and runs prompt_length - 1 transitions; its first prompt_length - 1 symbols are the input x,
  the last one the label y; examples are joined by "/". The TEST label is the Bayes-optimal next symbol,
  argmax_y p(y | x, concept) with the start value uniform (conditioned on the test x only, not on the demos),
  not a sampled one; the demos keep their sampled last symbol.
Deliberate simplifications:
- each pretraining sequence is BOS + a fresh chain from the start distribution, and every training step draws
  new sequences (the code samples 1000 fixed 10 240-symbol documents, concatenates them without BOS and cuts
  them into 1024-token blocks, so most blocks begin mid-chain, and trains for several epochs);
- every random draw comes from ``numpy.random.default_rng`` under explicit seeds (the code uses the global
  legacy ``np.random``, seed 1111, value matrix under seed 1114), so the world is a different draw from the
  released pickles, of the same law;
- ``prompt_rows`` takes the concept and start slot from its caller and keeps them for every row (the code draws
  both per prompt); the shipped tasks use concept 0, start slot 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import permutations
from string import ascii_lowercase

import numpy as np

from iclgd.errors import UserError
from iclgd.synthetic.pretrain.tokenizer import BOS_ID, FIRST_WORD_ID

DELIMITER = "/"


def softmax(x: np.ndarray, temp: float) -> np.ndarray:
    """exp(x / temp) / Σ exp(x / temp), over the last axis."""
    z = x / temp
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def letter_strings(n: int) -> list[str]:
    """The code's letter_generator: 'a'..'z', then 2-letter permutations 'ab', 'ac', ..., first n of them."""
    out: list[str] = []
    for length in range(1, len(ascii_lowercase)):
        for perm in permutations(ascii_lowercase, length):
            out.append("".join(perm))
            if len(out) >= n:
                return out
    return out


def permutation_mixture(rng: np.random.Generator, n: int, temp: float) -> np.ndarray:
    """Σ_p w_p P_p: n random n×n permutation matrices, weights softmax((u - 0.5) / temp), u ~ U(0, 1)^n."""
    weights = softmax(rng.random(n) - 0.5, temp)
    mats = np.stack([np.eye(n)[rng.permutation(n)] for _ in range(n)])
    return np.einsum("p,pij->ij", weights, mats)


@dataclass(frozen=True)
class Concept:
    """One HMM: start distribution over hidden states and transition matrix (rows sum to 1)."""

    start: np.ndarray  # (H,)
    transition: np.ndarray  # (H, H)


@dataclass(frozen=True)
class GINC:
    """The GINC world (fixed by ``world_seed``) and its samplers; hidden index h = value * n_slots + slot."""

    n_symbols: int = 50
    n_values: int = 10
    n_slots: int = 10
    n_hmms: int = 10
    transition_temp: float = 0.1
    start_temp: float = 10.0
    value_identity_coeff: float = 0.9
    world_seed: int = 1111

    def __post_init__(self) -> None:
        if self.n_symbols < 2 or self.n_values < 1 or self.n_slots < 2 or self.n_hmms < 2:
            raise UserError(f"GINC needs n_symbols >= 2, n_values >= 1, n_slots >= 2 and n_hmms >= 2; got "
                            f"{self.n_symbols}, {self.n_values}, {self.n_slots}, {self.n_hmms}")

    @property
    def n_hidden(self) -> int:
        return self.n_values * self.n_slots

    @cached_property
    def symbols(self) -> tuple[str, ...]:
        """The vocabulary words: '/' then the first n_symbols - 1 letter strings."""
        return (DELIMITER, *letter_strings(self.n_symbols - 1))

    @property
    def words(self) -> tuple[str, ...]:
        """Vocabulary words of the tokenizer (the symbols)."""
        return self.symbols

    @cached_property
    def _world(self) -> tuple[np.ndarray, tuple[Concept, ...]]:
        rng = np.random.default_rng(self.world_seed)
        emission = rng.integers(1, self.n_symbols, size=(self.n_values, self.n_slots))
        emission[:, 0] = 0  # slot 0 emits the delimiter
        value_rng = np.random.default_rng([self.world_seed, 3])  # one value matrix shared by every concept
        value = permutation_mixture(value_rng, self.n_values, self.transition_temp)
        value = (1 - self.value_identity_coeff) * value + self.value_identity_coeff * np.eye(self.n_values)
        concepts = []
        for _ in range(self.n_hmms):
            start = softmax(rng.random(self.n_hidden) - 0.5, self.start_temp)
            slot = permutation_mixture(rng, self.n_slots, self.transition_temp)
            concepts.append(Concept(start=start, transition=np.kron(value, slot)))
        return emission.reshape(-1), tuple(concepts)

    @property
    def emission(self) -> np.ndarray:
        """(H,) symbol index emitted by each hidden state."""
        return self._world[0]

    @property
    def concepts(self) -> tuple[Concept, ...]:
        return self._world[1]

    @property
    def n_train_concepts(self) -> int:
        """Concepts 0 .. n_hmms // 2 - 1 generate the pretraining data; the rest are out of distribution."""
        return self.n_hmms // 2

    def chains(self, rng: np.random.Generator, concept_ids: np.ndarray, first: np.ndarray | None,
               length: int) -> np.ndarray:
        """Hidden chains (B, length): h_0 = first (or ~ the concept's start), h_t ~ T[h_{t-1}] of each row's concept."""
        starts = np.stack([self.concepts[c].start for c in concept_ids])
        cumulative = np.stack([np.cumsum(self.concepts[c].transition, axis=1) for c in concept_ids])
        rows = np.arange(len(concept_ids))
        hidden = np.empty((len(concept_ids), length), dtype=np.int64)
        if first is None:
            first = (rng.random((len(concept_ids), 1)) > np.cumsum(starts, axis=1)).sum(axis=1)
        hidden[:, 0] = np.minimum(first, self.n_hidden - 1)
        for t in range(1, length):
            u = rng.random((len(concept_ids), 1))
            hidden[:, t] = np.minimum((u > cumulative[rows, hidden[:, t - 1]]).sum(axis=1), self.n_hidden - 1)
        return hidden

    def pretraining_batch(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """(B, length) token ids: BOS then length - 1 symbols of one in-distribution concept per row."""
        concept_ids = rng.integers(0, self.n_train_concepts, size=batch_size)
        hidden = self.chains(rng, concept_ids, None, length - 1)
        ids = np.full((batch_size, length), BOS_ID, dtype=np.int64)
        ids[:, 1:] = FIRST_WORD_ID + self.emission[hidden]
        return ids

    def next_symbol_probs(self, concept: int, start_slot: int, x: list[int]) -> np.ndarray:
        """p(next symbol | x) under ``concept`` with h_0 uniform over values at ``start_slot`` (forward algorithm)."""
        transition = self.concepts[concept].transition
        belief = np.zeros(self.n_hidden)
        belief[np.arange(self.n_values) * self.n_slots + start_slot] = 1.0
        for t, symbol in enumerate(x):
            if t > 0:
                belief = belief @ transition
            belief = belief * (self.emission == symbol)
            total = belief.sum()
            if total == 0:
                raise ValueError(f"symbols {x} cannot come from concept {concept} at slot {start_slot}")
            belief = belief / total
        hidden_next = belief @ transition
        return np.bincount(self.emission, weights=hidden_next, minlength=self.n_symbols)

    def prompt_rows(self, concept: int, start_slot: int, prompt_length: int, n: int, seed: int,
                    bayes_label: bool) -> list[dict[str, str]]:
        """n task rows {"text": x symbols joined by spaces, "label": y}: sampled examples of the concept from
        ``start_slot``; y is the sampled last symbol, or (bayes_label) the Bayes-optimal next symbol given x."""
        if not 1 <= start_slot < self.n_slots:
            raise UserError(f"GINC start slot {start_slot} must be in 1..{self.n_slots - 1} (slot 0 is the delimiter)")
        if prompt_length < 2:
            raise UserError(f"GINC prompt_length {prompt_length} must be at least 2 (input and label)")
        rng = np.random.default_rng(seed)
        values = rng.integers(0, self.n_values, size=n)
        hidden = self.chains(rng, np.full(n, concept), values * self.n_slots + start_slot, prompt_length)
        symbols = self.emission[hidden]
        rows = []
        for row in symbols:
            x = [int(s) for s in row[:-1]]
            y = int(np.argmax(self.next_symbol_probs(concept, start_slot, x))) if bayes_label else int(row[-1])
            rows.append({"text": " ".join(self.symbols[s] for s in x), "label": self.symbols[y]})
        return rows
