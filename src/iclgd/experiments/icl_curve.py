"""ICL accuracy against the number of demonstrations k, for a model folder (or hub id) on a task.

Every point goes through compare's own pipeline, so the curve and `iclgd compare` agree: the rows of
``select_rows`` (demos = the seeded sample of k, eval = the task's eval subset), the prompts of
``prepare_unit`` ([BOS] demo SEP ... demo SEP test_input), and ``score_batch`` on the one encoded prefix;
the prediction is the label word with the highest log-probability. k = 0 is the zero-shot pass
([BOS] test_input). Untrained variants are loaded per demo seed, seeded by it (Deutch et al.).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from iclgd.checks import check_device, check_output_dir
from iclgd.errors import UserError, warn
from iclgd.tasks import task_name

DEFAULT_KS = (0, 1, 2, 4, 8, 16)
TRAINED = "trained"


@dataclass(frozen=True)
class CurvePoint:
    variant: str  # "trained" or an untrained variant
    k: int  # demonstrations requested
    true_k: int  # demonstrations that fit the context (0 for zero-shot)
    seed: int  # demonstration seed (and the untrained variant's seed)
    accuracy: float
    n_eval: int


def icl_curve(model: str, task: str, *, ks: Sequence[int] = DEFAULT_KS, seeds: Sequence[int] = (0, 1, 2),
              untrained: Sequence[str] = (), eval_size: int | None = 200, template: int | str = 0,
              device: str = "cpu", progress: Callable[[CurvePoint], None] | None = None) -> list[CurvePoint]:
    """Accuracy for every (variant, k, seed): 'trained' and each untrained variant; ``progress`` gets each point."""
    import transformers

    from iclgd.experiments.compare import prepare_unit, select_rows
    from iclgd.experiments.config import CompareConfig
    from iclgd.experiments.passes import label_accuracy
    from iclgd.models.loading import UNTRAINED_VARIANTS, load_model
    from iclgd.tasks import load_splits, load_task

    ks, seeds = list(dict.fromkeys(ks)), list(dict.fromkeys(seeds))  # a repeated k or seed is one point
    if not ks or min(ks) < 0:
        raise UserError(f"k values {list(ks)} must be >= 0 (0 is zero-shot); give at least one")
    if not seeds:
        raise UserError("give at least one demonstration seed")

    def config(k: int, seed: int, variant: str) -> CompareConfig:
        return CompareConfig(model=model, task=task, template=template, shots=max(k, 1), seed=seed,
                             eval_size=eval_size, untrained=None if variant == TRAINED else variant, device=device)

    transformers.utils.logging.disable_progress_bar()
    unknown = [v for v in untrained if v not in UNTRAINED_VARIANTS]
    if unknown:
        raise UserError(f"unknown untrained variant(s) {unknown}: use {', '.join(UNTRAINED_VARIANTS)}")
    check_device(device)
    if eval_size is not None:  # said once here, not once per (k, seed)
        n_eval = len(load_splits(load_task(task)).eval)
        if eval_size > n_eval:
            warn(f"eval_size {eval_size} is more than the {n_eval} rows of {task}'s eval split: evaluating on {n_eval}")
            eval_size = n_eval
    rows = {(k, seed): select_rows(config(k, seed, TRAINED)) for k in ks for seed in seeds}
    trained_lm = load_model(model, device=device)
    points = []
    for variant in (TRAINED, *untrained):
        for seed in seeds:
            lm = trained_lm if variant == TRAINED else load_model(model, untrained=variant, seed=seed, device=device)
            for k in ks:
                unit = prepare_unit(config(k, seed, variant), lm, rows[(k, seed)], lr_search_rows=False,
                                    single_token_labels=False)  # accuracy only: any label words
                accuracy = label_accuracy(lm, unit.prompts, with_demos=k > 0)
                true_k = 0 if k == 0 else unit.prompts.true_k
                points.append(CurvePoint(variant, k, true_k, seed, accuracy, len(unit.prompts.queries)))
                if progress is not None:
                    progress(points[-1])
    _warn_truncated(points)
    return points


def _warn_truncated(points: Sequence[CurvePoint]) -> None:
    """One warning naming each asked k that the context cut to fewer demos (its points keep both k and true_k)."""
    cut: dict[int, set[int]] = {}
    for point in points:
        if point.true_k < point.k:
            cut.setdefault(point.k, set()).add(point.true_k)
    if cut:
        said = ", ".join(f"k = {k}: {min(t)}" + (f"–{max(t)}" if max(t) > min(t) else "")
                         for k, t in sorted(cut.items()))
        warn(f"the context holds fewer demonstrations than asked ({said}): those points are at their true k, "
             "which curve.parquet keeps as true_k beside k")


def _fit(point: CurvePoint) -> str:
    return f" ({point.true_k} fit)" if point.true_k < point.k else ""


def true_k_text(points: Sequence[CurvePoint], k: int) -> str:
    """How an asked ``k`` is shown: itself, or with the demos that fit where the context cut some ("30 (19 fit)")."""
    cut = sorted({p.true_k for p in points if p.k == k and p.true_k < k})
    if not cut:
        return str(k)
    return f"{k} ({cut[0]}{f'–{cut[-1]}' if cut[-1] > cut[0] else ''} fit)"


def write_points(points: Sequence[CurvePoint], path: str | Path, record: dict) -> Path:
    """The points as Parquet (one row per variant, k, seed), with ``record`` in the file's metadata."""
    from iclgd.runs import write_parquet

    return write_parquet([asdict(p) for p in points], path, record)


def run_icl_curve(model: str, task: str, out: str | Path, *, ks: Sequence[int] = DEFAULT_KS,
                  seeds: Sequence[int] = (0, 1, 2), untrained: Sequence[str] = (), eval_size: int | None = 200,
                  template: int | str = 0, device: str = "cpu", show_progress: bool = True
                  ) -> tuple[list[CurvePoint], list[Path]]:
    """The curve, written under ``out``: curve.parquet (points + a record of what produced them) and the plot
    curve.png / curve.pdf. Returns the points and the written paths."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from iclgd.progress import log_line
    from iclgd.report.curves import plot_curve
    from iclgd.runner.store import library_versions
    from iclgd.tasks import load_task

    out = check_output_dir(out)
    label_count = len(load_task(task).label_words)
    total = len(set(ks)) * len(set(seeds)) * (1 + len(untrained))  # a repeated k or seed is one point
    with Progress(TextColumn("icl-curve"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not show_progress, transient=True) as bar:
        job = bar.add_task("points", total=total)

        def on_point(point: CurvePoint) -> None:
            bar.advance(job)
            log_line(bar, f"{point.variant}, seed {point.seed}, k = {point.k}{_fit(point)}: accuracy "
                          f"{point.accuracy:.3f}", job)

        points = icl_curve(model, task, ks=ks, seeds=seeds, untrained=untrained, eval_size=eval_size,
                           template=template, device=device, progress=on_point)
    record = {"model": model, "task": task, "ks": list(ks), "seeds": list(seeds), "untrained": list(untrained),
              "eval_size": points[0].n_eval if points else eval_size, "template": template, "chance": 1 / label_count,
              "versions": library_versions()}
    paths = [write_points(points, out / "curve.parquet", record)]
    paths += plot_curve(points, out / "curve", title=f"{task_name(task)}: {Path(model).name}",
                        chance=1 / label_count)
    return points, paths
