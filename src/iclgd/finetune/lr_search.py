"""The FT learning rate: Dai et al.'s published values where a (model, task) pair has one, else a search.

Two searches, both scoring FT accuracy on held-out training rows (disjoint from the demos) through a callable,
so they know nothing about tasks. Dai tuned seed and learning rate on the evaluation set itself; these never see it.

- :func:`race_grid` ("grid", the default): the choice of Dai's FT at every point of Dai's 36-point grid, each
  scored on every held-out row, found exactly with less work: the rows are scored in chunks of 25, best first,
  and a point stops once its errors so far rule it out (:func:`search_lr` is the plain loop, for any score).
- :func:`halving_search` ("halving"): the 8 points of the grid with mantissa 1 or 3 (one per half decade), trained
  as one batch of trajectories (:mod:`iclgd.finetune.trajectories`), then successive halving (Jamieson &
  Talwalkar 2016): every point is scored on the first 25 held-out rows, the better half goes on to 50, then
  100, ..., until one is left.

Why no cheap search can promise the grid's choice: one epoch of Dai's GD is chaotic in η on a real LM.
SmolLM2-135M trained on 16 synthetic-sentiment demos at η = 5e-3 scores 1.00 on the held-out rows and 0.54 at
η = 5e-3·(1 + 1e-6); the batched trajectories, equal to the sequential ones up to rounding, part from them at
such points too. The grid's 36 points are 36 draws, and the best of 36 draws can beat anything a coarser
search finds: on vader-movie the grid's 2e-2 (GD 77 % on the eval rows) is no half-decade point, and halving's
3e-3 gives GD 54 % (the README's lr-search section). So the default finds the grid's choice itself, and saves
only work that cannot change it.
"""

from __future__ import annotations

import heapq
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
    """The chosen learning rate and each scored grid point's score (lr -> accuracy), in grid order, with the number
    of held-out rows each score is over (None: all of them). ``flat``: the search's own no-signal verdict, where its
    scores are over different rows (see :func:`no_signal`)."""

    lr: float
    scores: dict[float, float]
    rows: dict[float, int] | None = None
    flat: bool | None = None


def no_signal(search: LrSearch) -> bool:
    """Whether every point of the search scored as its winner did: the choice is then the tie rule's (the smallest
    lr), not a measurement (an untrained model, or a task the FT cannot move on these rows)."""
    if search.flat is not None:
        return search.flat
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


def race_grid(
    train: Callable[[float], dict[str, Tensor]],
    correct: Callable[[dict[str, Tensor], range], int],
    n_rows: int,
    grid: Sequence[float] = DAI_LR_GRID,
    chunk_rows: int = 25,
    max_bytes: int = 2 << 30,
    on_chunk: Callable[[float, range], None] | None = None,
) -> LrSearch:
    """The grid search's choice (the lr whose trained model labels the most of ``n_rows`` held-out rows right, ties
    to the smaller lr), found best first: ``train(lr)`` gives an lr's trained tensors, ``correct(tensors, rows)``
    counts the rows in ``rows`` (a range of row indices) they label right.

    The rows are cut into fixed chunks of ``chunk_rows``. An lr's errors so far bound its final errors from below,
    so the lr with the least (errors so far, lr) is the only one that can still be ahead: it is trained (when first
    needed) and scored on its next chunk, until that least lr has scored every chunk. Its final (errors, lr) then
    lies below every other lr's bound, so it is the grid's choice, and it is the same choice as scoring every lr
    on every chunk (each chunk is scored alike either way). The work left out: lrs ruled out by their first errors,
    and lrs above a winner that makes no error (never trained).

    Trained tensors are kept while they fit in ``max_bytes`` (the worst-placed are dropped first, after a new set
    is trained: the peak is the cap plus one set) and retrained when needed again: training is deterministic on a
    CPU, so that changes nothing but time. ``on_chunk(lr, rows)`` reports each chunk scored. The result's scores
    are over each lr's rows scored (``rows``); lrs never scored are absent.
    """
    if n_rows < 1 or not grid or chunk_rows < 1:
        raise ValueError("the grid search needs held-out rows, a grid and chunks of at least one row")
    lrs = sorted(set(grid))
    chunks = [range(start, min(start + chunk_rows, n_rows)) for start in range(0, n_rows, chunk_rows)]
    hits: dict[float, list[int]] = {lr: [] for lr in lrs}  # right rows per chunk scored
    errors = dict.fromkeys(lrs, 0)
    frontier = [(0, lr) for lr in lrs]  # a heap of (errors so far, lr)
    kept: dict[float, dict[str, Tensor]] = {}
    while len(hits[frontier[0][1]]) < len(chunks):
        _, lr = heapq.heappop(frontier)
        if lr not in kept:
            kept[lr] = train(lr)
        rows = chunks[len(hits[lr])]
        right = int(correct(kept[lr], rows))
        if not 0 <= right <= len(rows):
            raise ValueError(f"{right} rows right of the {len(rows)} scored")
        hits[lr].append(right)
        errors[lr] += len(rows) - right
        heapq.heappush(frontier, (errors[lr], lr))
        if on_chunk is not None:
            on_chunk(lr, rows)
        _drop_worst(kept, errors, max_bytes, needed=frontier[0][1])
    best = frontier[0][1]
    scored = [lr for lr in lrs if hits[lr]]
    seen = {lr: sum(len(chunks[i]) for i in range(len(hits[lr]))) for lr in scored}
    # Flat: every lr scored, each as the winner did on every chunk it was scored on (it stopped once it could at best
    # tie); a winner without errors leaves the lrs above it unscored, and nothing to say.
    flat = len(scored) == len(lrs) > 1 and all(hits[lr] == hits[best][: len(hits[lr])] for lr in scored)
    return LrSearch(best, {lr: (seen[lr] - errors[lr]) / seen[lr] for lr in scored}, seen, flat)


def _drop_worst(kept: dict[float, dict[str, Tensor]], errors: dict[float, int], max_bytes: int,
                needed: float) -> None:
    """Drop kept tensors, the lr with the most errors (then the largest lr) first, until they fit in max_bytes;
    the ``needed`` lr's (the next to be scored) stay."""
    size = {lr: sum(t.numel() * t.element_size() for t in tensors.values()) for lr, tensors in kept.items()}
    while sum(size.values()) > max_bytes and len(size) > (needed in size):
        worst = max((lr for lr in kept if lr != needed), key=lambda lr: (errors[lr], lr))
        del kept[worst], size[worst]


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
    so_far: dict[float, dict[int, int]] = {lr: {} for lr in lrs}  # rows scored -> right rows among them
    alive, upto = lrs, min(first_rows, n_rows)
    while True:
        for lr in alive:
            hits[lr] += int(correct(trained[lr], range(seen[lr], upto)))
            seen[lr] = upto
            so_far[lr][upto] = hits[lr]
        ranked = sorted(alive, key=lambda lr: (-hits[lr], lr))
        alive = sorted(ranked[: (len(alive) + 1) // 2])
        if len(alive) == 1 or upto == n_rows:
            break
        upto = min(2 * upto, n_rows)
    best = ranked[0]
    # Flat: every lr labelled as many rows right as the winner did on the rows it was scored on (its scores alone,
    # fractions over different rows, cannot say so: an lr ruled out early can end at the winner's fraction).
    flat = len(lrs) > 1 and all(hits[lr] == so_far[best][seen[lr]] for lr in lrs)
    return LrSearch(best, {lr: hits[lr] / seen[lr] for lr in lrs}, dict(seen), flat)
