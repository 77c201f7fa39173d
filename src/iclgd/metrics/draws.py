"""Random draws for the baselines, made per example so that no value depends on batching.

Example i's draw comes from its own generator, seeded by (unit seed, example index, stream name): a unit
gives the same baselines whatever its batch size, and whichever examples share a batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def example_seed(seed: int, example: int, stream: str) -> int:
    """A 63-bit seed from (seed, example, stream), the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256(f"{seed}/{stream}/{example}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def uniform_per_example(seed: int, examples: Sequence[int], shape: Sequence[int], stream: str) -> Tensor:
    """u ~ Uniform[0, 1)^shape for each example, float64, stacked: [len(examples), *shape]."""
    draws = [torch.rand(tuple(shape), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(example_seed(seed, int(i), stream)))
             for i in examples]
    return torch.stack(draws) if draws else torch.empty(0, *shape, dtype=torch.float64)
