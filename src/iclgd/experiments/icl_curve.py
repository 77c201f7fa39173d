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

import torch

from iclgd.checks import check_device, check_output_dir
from iclgd.errors import UserError, warn

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


@torch.no_grad()
def curve_accuracy(lm, prompts, *, zero_shot: bool, batch_size: int = 64) -> float:
    """Accuracy of the ICL pass on the shared prefix (or of the zero-shot pass) over ``prompts.queries``."""
    from iclgd.models.capture import encode_prefix
    from iclgd.prompts.scoring import batches, score_batch

    prefix = None if zero_shot else encode_prefix(lm, torch.tensor(prompts.prefix_ids, dtype=torch.long))
    correct = 0
    for indices in batches(len(prompts.queries), batch_size):
        scores = score_batch(lm, prompts, indices, prefix=prefix, capture=False)
        gold = torch.tensor([prompts.queries[i].gold for i in indices])
        correct += int((scores.candidate_logprobs.argmax(-1).cpu() == gold).sum())
    return correct / len(prompts.queries)


def icl_curve(model: str, task: str, *, ks: Sequence[int] = DEFAULT_KS, seeds: Sequence[int] = (0, 1, 2),
              untrained: Sequence[str] = (), eval_size: int | None = 200, template: int | str = 0,
              device: str = "cpu", progress: Callable[[], None] | None = None) -> list[CurvePoint]:
    """Accuracy for every (variant, k, seed): 'trained' and each untrained variant."""
    import transformers

    from iclgd.experiments.compare import prepare_unit, select_rows
    from iclgd.experiments.config import CompareConfig
    from iclgd.models.loading import UNTRAINED_VARIANTS, load_model
    from iclgd.tasks import load_splits, load_task

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
                unit = prepare_unit(config(k, seed, variant), lm, rows[(k, seed)], lr_search_rows=False)
                accuracy = curve_accuracy(lm, unit.prompts, zero_shot=k == 0)
                true_k = 0 if k == 0 else unit.prompts.true_k
                points.append(CurvePoint(variant, k, true_k, seed, accuracy, len(unit.prompts.queries)))
                if progress is not None:
                    progress()
    return points


def mean_by_k(points: Sequence[CurvePoint]) -> dict[str, dict[int, float]]:
    """variant -> k -> accuracy averaged over seeds."""
    table: dict[str, dict[int, list[float]]] = {}
    for p in points:
        table.setdefault(p.variant, {}).setdefault(p.k, []).append(p.accuracy)
    return {v: {k: sum(a) / len(a) for k, a in by_k.items()} for v, by_k in table.items()}


def write_points(points: Sequence[CurvePoint], path: str | Path, record: dict) -> Path:
    """The points as Parquet (one row per variant, k, seed), with ``record`` in the file's metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([asdict(p) for p in points])
    table = table.replace_schema_metadata({"iclgd": json.dumps(record, sort_keys=True, default=str)})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def plot_curve(points: Sequence[CurvePoint], out_prefix: str | Path, title: str = "", chance: float | None = None
               ) -> list[Path]:
    """Accuracy vs k (mean over seeds, min-max band), one line per variant; writes <prefix>.png and .pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    ks = sorted({p.k for p in points})
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for variant, by_k in mean_by_k(points).items():
        x = [max(k, 0.5) for k in ks]  # k = 0 drawn at 0.5 on the log axis
        accuracies = [[p.accuracy for p in points if p.variant == variant and p.k == k] for k in ks]
        ax.plot(x, [by_k[k] for k in ks], marker="o", label=variant)
        ax.fill_between(x, [min(a) for a in accuracies], [max(a) for a in accuracies], alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks([max(k, 0.5) for k in ks], [str(k) for k in ks])
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_prefix.with_suffix(".png"), out_prefix.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def run_icl_curve(model: str, task: str, out: str | Path, *, ks: Sequence[int] = DEFAULT_KS,
                  seeds: Sequence[int] = (0, 1, 2), untrained: Sequence[str] = (), eval_size: int | None = 200,
                  template: int | str = 0, device: str = "cpu", show_progress: bool = True
                  ) -> tuple[list[CurvePoint], list[Path]]:
    """The curve, written under ``out``: curve.parquet (points + a record of what produced them) and the plot
    curve.png / curve.pdf. Returns the points and the written paths."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from iclgd.experiments.compare import versions
    from iclgd.tasks import load_task

    out = check_output_dir(out)
    label_count = len(load_task(task).label_words)
    total = len(ks) * len(seeds) * (1 + len(untrained))
    with Progress(TextColumn("icl-curve"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not show_progress, transient=True) as bar:
        job = bar.add_task("points", total=total)
        points = icl_curve(model, task, ks=ks, seeds=seeds, untrained=untrained, eval_size=eval_size,
                           template=template, device=device, progress=lambda: bar.advance(job))
    record = {"model": model, "task": task, "ks": list(ks), "seeds": list(seeds), "untrained": list(untrained),
              "eval_size": points[0].n_eval if points else eval_size, "template": template, "chance": 1 / label_count,
              "versions": versions()}
    paths = [write_points(points, out / "curve.parquet", record)]
    paths += plot_curve(points, out / "curve", title=f"{Path(task).stem}: {Path(model).name}",
                        chance=1 / label_count)
    return points, paths
