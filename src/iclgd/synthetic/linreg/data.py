"""Linear-regression tasks of von Oswald et al. 2023 and the seeds that fix every random choice.

A task: W ~ N(0, s² I) of shape m×d (s = weight scale), N context inputs and one query input
x ~ U(−α/2, α/2)^d (α = input range: 1 gives the official ±0.5, 2 the paper text's ±1), y = W x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STREAMS = ("init", "train", "eval", "critique", "ood")


def stream_seeds(seed: int) -> dict[str, int]:
    """One integer seed per random stream (init, train, eval, critique, ood), all derived from `seed`."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    states = [int(child.generate_state(1, dtype=np.uint64)[0] >> 1) for child in children]
    return dict(zip(STREAMS, states, strict=True))


def generator(seed: int) -> np.random.Generator:
    """The data generator (numpy PCG64: several times faster than torch's CPU generator for these batches)."""
    return np.random.default_rng(seed)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU torch generator started at `seed` (for the init)."""
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Tasks:
    """A batch of regression tasks: context (x, y), query (x_query, y_query) and the true weights w."""

    x: torch.Tensor  # (B, N, d)
    y: torch.Tensor  # (B, N, m)
    x_query: torch.Tensor  # (B, d)
    y_query: torch.Tensor  # (B, m)
    w: torch.Tensor  # (B, m, d)

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, dtype: torch.dtype) -> Tasks:
        return Tasks(*(t.to(dtype) for t in (self.x, self.y, self.x_query, self.y_query, self.w)))

    def subset(self, n: int) -> Tasks:
        return Tasks(self.x[:n], self.y[:n], self.x_query[:n], self.y_query[:n], self.w[:n])

    def permute_context(self, order: torch.Tensor) -> Tasks:
        """The same tasks with the context pairs in `order` (a permutation of range(N))."""
        return Tasks(self.x[:, order], self.y[:, order], self.x_query, self.y_query, self.w)


def sample_tasks(
    n_tasks: int,
    d: int,
    m: int,
    n_context: int,
    input_range: float = 1.0,
    weight_scale: float = 1.0,
    gen: np.random.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tasks:
    """Fresh tasks: w ~ N(0, weight_scale² I), x, x_query ~ U(−input_range/2, input_range/2)^d, y = w x."""
    gen = np.random.default_rng() if gen is None else gen
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    w = torch.from_numpy(gen.standard_normal((n_tasks, m, d), dtype=np_dtype)).mul_(weight_scale)
    inputs = torch.from_numpy(gen.random((n_tasks, n_context + 1, d), dtype=np_dtype)).sub_(0.5).mul_(input_range)
    outputs = inputs @ w.transpose(1, 2)  # (B, N+1, m): y = w x for the context and the query
    x, x_query = inputs[:, :n_context], inputs[:, n_context]
    return Tasks(x, outputs[:, :n_context], x_query, outputs[:, n_context], w).to(dtype)


def squared_loss_per_task(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 · ||prediction − target||² per task, (B,)."""
    return 0.5 * ((prediction - target) ** 2).sum(-1)


def squared_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official loss: 0.5 · mean over tasks of ||prediction − target||²."""
    return squared_loss_per_task(prediction, target).mean()
