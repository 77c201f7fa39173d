"""In-context Markov chains (Edelman et al. 2024, "The Evolution of Statistical Induction Heads").

Each sequence draws its own transition matrix P over n_states states, rows P_i ~ Dirichlet(alpha 1), and
is [BOS] s_1 s_2 ... with s_1 uniform and s_{t+1} ~ P_{s_t}. P is only readable from the context: the
Bayes-optimal next-state prediction is the smoothed bigram count
    p(s_{t+1} = j | s_1..s_t) = (c_{s_t j} + alpha) / (Σ_j' c_{s_t j'} + n_states alpha),
c_ij = number of transitions i -> j so far; a model that matches it has learnt a statistical induction head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from iclgd.errors import UserError
from iclgd.synthetic.pretrain.tokenizer import BOS_ID, FIRST_WORD_ID


@dataclass(frozen=True)
class MarkovChains:
    n_states: int = 3
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.n_states < 2 or self.alpha <= 0:
            raise UserError(f"markov needs n_states >= 2 and alpha > 0; got {self.n_states}, {self.alpha}")

    @cached_property
    def words(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.n_states))

    def chains(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """(B, length) state indices, one Dirichlet-drawn transition matrix per row."""
        transition = rng.dirichlet(np.full(self.n_states, self.alpha), size=(batch_size, self.n_states))
        cumulative = np.cumsum(transition, axis=2)
        rows = np.arange(batch_size)
        states = np.empty((batch_size, length), dtype=np.int64)
        states[:, 0] = rng.integers(0, self.n_states, size=batch_size)
        for t in range(1, length):
            u = rng.random((batch_size, 1))
            states[:, t] = np.minimum((u > cumulative[rows, states[:, t - 1]]).sum(axis=1), self.n_states - 1)
        return states

    def pretraining_batch(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """(B, length) token ids: BOS then a chain of length - 1 states."""
        ids = np.full((batch_size, length), BOS_ID, dtype=np.int64)
        ids[:, 1:] = FIRST_WORD_ID + self.chains(rng, batch_size, length - 1)
        return ids

    def bayes_next(self, states: np.ndarray) -> np.ndarray:
        """(B, T, n_states): the Bayes-optimal p(s_{t+1} | s_1..s_t) for every prefix (see the module docstring)."""
        batch, length = states.shape
        counts = np.zeros((batch, self.n_states, self.n_states))
        rows = np.arange(batch)
        out = np.empty((batch, length, self.n_states))
        for t in range(length):
            if t > 0:
                counts[rows, states[:, t - 1], states[:, t]] += 1
            current = counts[rows, states[:, t]] + self.alpha
            out[:, t] = current / current.sum(axis=1, keepdims=True)
        return out
