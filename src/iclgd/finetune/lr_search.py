"""The FT learning rate: Dai et al.'s published values where a (model, task) pair has one, else a search.

Two searches, both scoring FT accuracy on held-out training rows (disjoint from the demos) through a callable,
so they know nothing about tasks. Dai tuned seed and learning rate on the evaluation set itself; these never see it.

- :func:`search_lr` ("grid", the default): Dai's FT at every point of Dai's 36-point grid, each scored on every
  held-out row.
- :func:`halving_search` ("halving"): the 8 points of the grid with mantissa 1 or 3 (one per half decade), trained
  as one batch of trajectories (:mod:`iclgd.finetune.trajectories`), then successive halving (Jamieson &
  Talwalkar 2016): every point is scored on the first 25 held-out rows, the better half goes on to 50, then
  100, ..., until one is left. About 1/15 of the grid search's work.

Why no cheap search can promise the grid's choice: one epoch of Dai's GD is chaotic in η on a real LM.
SmolLM2-135M trained on 16 synthetic-sentiment demos at η = 5e-3 scores 1.00 on the held-out rows and 0.54 at
η = 5e-3·(1 + 1e-6); the batched trajectories, equal to the sequential ones up to rounding, part from them at
such points too. The grid's 36 points are 36 draws, and the best of 36 draws can beat anything a coarser search
finds: on vader-movie the grid's 2e-2 (GD 76 % on the eval rows) is no half-decade point, and
halving's 3e-3 gives GD 54 % (the README's lr-search section).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from torch import Tensor, nn

from iclgd.finetune.gd import FinetuneResult, finetune_gd

# Dai's grid {1..9} x {1e-1, 1e-2, 1e-3, 1e-4}, ascending; parsed from decimal text so 3e-3 is exactly 0.003.
DAI_LR_GRID: tuple[float, ...] = tuple(sorted(float(f"{m}e-{e}") for e in (1, 2, 3, 4) for m in range(1, 10)))
# Its points with mantissa 1 or 3: one per half decade, 1e-4 ... 3e-1 (the halving search's candidates).
HALF_DECADE_GRID: tuple[float, ...] = tuple(lr for lr in DAI_LR_GRID if f"{lr:.0e}"[0] in "13")

# Published learning rates and demo seeds (Dai et al. 2023), keyed by (fairseq dense model size, task).
PUBLISHED_LR: dict[tuple[str, str], float] = {
    ("1.3B", "sst2"): 5e-4, ("1.3B", "sst5"): 1.6e-4, ("1.3B", "mr"): 3e-3,
    ("1.3B", "subj"): 3e-3, ("1.3B", "agnews"): 0.2, ("1.3B", "cb"): 0.08,
    ("2.7B", "sst2"): 7e-3, ("2.7B", "sst5"): 4e-2, ("2.7B", "mr"): 1e-3,
    ("2.7B", "subj"): 2e-3, ("2.7B", "agnews"): 0.2, ("2.7B", "cb"): 1e-2,
}
PUBLISHED_SEED: dict[tuple[str, str], int] = {
    ("1.3B", "sst2"): 2, ("1.3B", "sst5"): 5, ("1.3B", "mr"): 5,
    ("1.3B", "subj"): 4, ("1.3B", "agnews"): 3, ("1.3B", "cb"): 3,
    ("2.7B", "sst2"): 7, ("2.7B", "sst5"): 5, ("2.7B", "mr"): 1,
    ("2.7B", "subj"): 4, ("2.7B", "agnews"): 3, ("2.7B", "cb"): 3,
}


def published_size(model: str) -> str | None:
    """"1.3B" / "2.7B" for Dai's models (the size itself, or a fairseq-dense hub id or folder), else None."""
    if model in ("1.3B", "2.7B"):
        return model
    name = model.rstrip("/").lower()
    for size in ("1.3B", "2.7B"):
        if name.endswith(f"fairseq-dense-{size.lower()}"):
            return size
    return None


def published_lr(model: str, task: str) -> float | None:
    """Dai et al.'s learning rate for (model, task), or None where they published none."""
    size = published_size(model)
    return None if size is None else PUBLISHED_LR.get((size, task))


def published_seed(model: str, task: str) -> int | None:
    """Dai et al.'s demo seed for (model, task), or None where they published none."""
    size = published_size(model)
    return None if size is None else PUBLISHED_SEED.get((size, task))


class LrSearch(NamedTuple):
    """The chosen learning rate and every grid point's score (lr -> accuracy), in grid order, with the number of
    held-out rows each score is over (None: all of them)."""

    lr: float
    scores: dict[float, float]
    rows: dict[float, int] | None = None


def no_signal(search: LrSearch) -> bool:
    """Whether every point of the search scored as its winner did: the choice is then the tie rule's (the smallest
    lr), not a measurement (an untrained model, or a task the FT cannot move on these rows)."""
    return len(search.scores) > 1 and len(set(search.scores.values())) == 1


def search_grid(score_lr: Callable[[float], float], grid: Sequence[float] = DAI_LR_GRID) -> LrSearch:
    """argmax_{η ∈ grid} score_lr(η); ties go to the smaller η (grid order ascending)."""
    scores = {lr: float(score_lr(lr)) for lr in grid}
    best = max(sorted(scores), key=lambda lr: scores[lr])  # max keeps the first of equal scores
    return LrSearch(best, scores)


def search_lr(
    lm: nn.Module,
    demo_sequences: Sequence[Tensor | Sequence[int]],
    score: Callable[[dict[str, Tensor]], float],
    grid: Sequence[float] = DAI_LR_GRID,
    finetune: Callable[[nn.Module, Sequence, float], FinetuneResult] = finetune_gd,
    on_point: Callable[[float, float], None] | None = None,
) -> LrSearch:
    """Finetune on the demos at every η of the grid and keep the η whose trained tensors score best.

    ``score(trained_tensors)`` must return FT accuracy on held-out training rows (it swaps the tensors
    in, evaluates, and restores). ``on_point(lr, accuracy)`` reports progress.
    """

    def score_lr(lr: float) -> float:
        accuracy = score(finetune(lm, demo_sequences, lr).tensors)
        if on_point is not None:
            on_point(lr, accuracy)
        return accuracy

    return search_grid(score_lr, grid)


def halving_search(
    train: Callable[[Sequence[float]], list[dict[str, Tensor]]],
    correct: Callable[[dict[str, Tensor], range], int],
    n_rows: int,
    grid: Sequence[float] = HALF_DECADE_GRID,
    first_rows: int = 25,
) -> LrSearch:
    """Successive halving over ``grid``: ``train(lrs)`` gives each lr's trained tensors; ``correct(tensors, rows)``
    counts the held-out rows in ``rows`` (a range of row indices) the trained model labels right.

    Every lr is scored on rows [0, first_rows); the better half (ceil; ties to the smaller lr) on [0, 2·first_rows),
    and so on, doubling, until the halving leaves one lr or all ``n_rows`` are used: the best of the last rung wins
    (ties to the smaller lr).
    """
    if n_rows < 1 or not grid:
        raise ValueError("the halving search needs held-out rows and a grid")
    lrs = sorted(grid)
    trained = dict(zip(lrs, train(lrs), strict=True))
    hits = dict.fromkeys(lrs, 0)
    seen = dict.fromkeys(lrs, 0)
    alive, upto = lrs, min(first_rows, n_rows)
    while True:
        for lr in alive:
            hits[lr] += int(correct(trained[lr], range(seen[lr], upto)))
            seen[lr] = upto
        ranked = sorted(alive, key=lambda lr: (-hits[lr], lr))
        alive = sorted(ranked[: (len(alive) + 1) // 2])
        if len(alive) == 1 or upto == n_rows:
            break
        upto = min(2 * upto, n_rows)
    return LrSearch(ranked[0], {lr: hits[lr] / seen[lr] for lr in lrs}, dict(seen))
