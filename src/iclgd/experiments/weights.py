"""Shen et al.'s weight-space analyses of a causal LM (spec/metrics.md, "Weight-space analyses").

    weight_sparsity(model)        per (W_Q | W_K | W_V, layer, δ): the fraction of |w| < δ, and its mean over layers,
                                  beside the sparsity von Oswald's construction needs at the model's width d
    perturbation(model, task)     ICL accuracy with N(0, σ²) noise added to every weight matrix, against the relative
                                  weight change |ΔW|_F / |W|_F; the noise of (seed, σ) is one seeded stream and the
                                  original weights are put back bit for bit after each σ
    checkpoint_series(folder)     ICL and zero-shot accuracy, relative change to the first or last checkpoint and
                                  sparsity, for every kept checkpoint of a run (``iclgd pretrain --keep-every N``)

Accuracy is that of ``iclgd compare`` and ``iclgd icl-curve``: the same rows (``select_rows``), the same prompts
(``prepare_unit``) and ``label_accuracy`` on the one encoded prefix. The ``run_*`` functions write their results
under an output folder: a Parquet table (with the record in its metadata, as icl-curve), record.json and the plot.

Which matrices get noise (``weights=``): "all" (default) is every parameter of two or more dimensions, i.e. the token
and position embeddings, the (tied) unembedding and every attention and MLP matrix, each tied matrix once; "blocks"
leaves out the embeddings and the unembedding; "qkv" is W_Q, W_K, W_V only (the construction's matrices; a fused
q/k/v weight as a whole). Norm gains and biases are vectors at another scale (gains sit near 1), not weight matrices
in the sense of |ΔW|_F / |W|_F, and get no noise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iclgd.checks import check_device, check_output_dir
from iclgd.errors import UserError, warn
from iclgd.metrics.weights import THRESHOLDS, construction_sparsity, layer_sparsity, relative_weight_change
from iclgd.models.families import attention_modules, family_of, projection_parameters, projection_weight
from iclgd.runs import write_parquet
from iclgd.tasks import task_name

MATRICES = {"q": "W_Q", "k": "W_K", "v": "W_V"}
WEIGHT_SETS = {
    "all": "every parameter with >= 2 dimensions: embeddings, unembedding, attention and MLP matrices",
    "blocks": "every parameter with >= 2 dimensions inside the decoder blocks (attention and MLP matrices)",
    "qkv": "the query, key and value projection matrices of every layer",
}
REFERENCES = ("final", "first")  # the checkpoint relative weight changes are measured from
DEFAULT_SIGMAS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


# ----------------------------------------------------------------------------------------------------------
# Sparsity


@dataclass(frozen=True)
class SparsityRow:
    matrix: str  # W_Q | W_K | W_V
    layer: int | None  # None: the mean over layers
    threshold: float  # δ
    sparsity: float  # fraction of entries with |w| < δ
    construction: float  # the sparsity von Oswald's construction needs at the model's width (independent of δ)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    if not thresholds:
        raise UserError("give at least one threshold δ")
    bad = [t for t in thresholds if not (math.isfinite(t) and t > 0)]
    if bad:
        raise UserError(f"thresholds {bad} must be finite and > 0 (sparsity counts |w| < δ): e.g. --threshold 1e-3")
    return tuple(dict.fromkeys(float(t) for t in thresholds))


def weight_sparsity(model: nn.Module, thresholds: Sequence[float] = THRESHOLDS) -> list[SparsityRow]:
    """Sparsity of W_Q, W_K, W_V of every layer and their mean over layers, at each δ, with the construction's
    requirement at width d = the model's hidden size (Shen et al. use d = 4096 for LLaMA-7B)."""
    family = family_of(model)
    n_layers = len(attention_modules(model, family))
    need = construction_sparsity(model.config.hidden_size)
    rows = []
    for kind, name in MATRICES.items():
        weights = [projection_weight(model, family, kind, layer) for layer in range(n_layers)]
        for delta, (per_layer, mean) in layer_sparsity(weights, thresholds).items():
            rows += [SparsityRow(name, layer, delta, value, need[name]) for layer, value in enumerate(per_layer)]
            rows.append(SparsityRow(name, None, delta, mean, need[name]))
    return rows


# ----------------------------------------------------------------------------------------------------------
# Perturbation


def check_weight_set(weights: str) -> str:
    if weights not in WEIGHT_SETS:
        raise UserError(f"unknown weight set {weights!r}: use {', '.join(WEIGHT_SETS)}")
    return weights


def weight_matrices(model: nn.Module, weights: str = "all") -> dict[str, nn.Parameter]:
    """The matrices of the set ``weights`` (see WEIGHT_SETS) by parameter name; a tied matrix once."""
    check_weight_set(weights)
    family = family_of(model)
    if weights == "qkv":
        slices = projection_parameters(model, family, tuple(MATRICES))
        return {s.name: s.parameter for s in slices if s.parameter.dim() >= 2}
    prefix = family.blocks + "."
    return {name: p for name, p in model.named_parameters()  # named_parameters lists a tied matrix once
            if p.dim() >= 2 and (weights == "all" or name.startswith(prefix))}


def noise_generator(seed: int, sigma: float) -> torch.Generator:
    """One random stream per (seed, σ): the noise at σ does not depend on which other σ were asked, or in what order."""
    sigma_bits = int(np.array(sigma, dtype=np.float64).view(np.uint64))
    state = np.random.SeedSequence([seed, sigma_bits & 0xFFFFFFFF, sigma_bits >> 32]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class WeightChange:
    relative: float  # |ΔW|_F / |W|_F over all matrices of the set together
    mean_relative: float  # the mean over matrices of each one's |ΔW|_F / |W|_F


def weight_change(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> WeightChange:
    """How far ``new`` moved from ``old`` (same names and shapes), in float64."""
    changed = squared = 0.0
    per_matrix = []
    for name, before in old.items():
        after = new[name]
        if after.shape != before.shape:
            raise UserError(f"{name} has shape {tuple(after.shape)} here and {tuple(before.shape)} in the reference: "
                            "compare checkpoints of one model")
        relative = relative_weight_change(after.cpu(), before.cpu())
        norm = float(torch.linalg.vector_norm(before.detach().double()))
        changed, squared = changed + (relative * norm) ** 2, squared + norm ** 2
        per_matrix.append(relative)
    return WeightChange(math.sqrt(changed / squared), sum(per_matrix) / len(per_matrix))


@contextmanager
def perturbed(matrices: dict[str, nn.Parameter], sigma: float, seed: int,
              original: dict[str, torch.Tensor] | None = None) -> Iterator[WeightChange]:
    """``matrices`` + N(0, σ²) noise (drawn in float32 on the CPU, in name order, from ``noise_generator(seed, σ)``)
    inside the block; on leaving it, every matrix is copied back from ``original`` (default: a copy taken here),
    bit for bit. Yields the relative change the noise made."""
    if original is None:
        original = {name: p.detach().clone() for name, p in matrices.items()}
    generator = noise_generator(seed, sigma)
    try:
        with torch.no_grad():
            if sigma > 0:
                for name in sorted(matrices):
                    p = matrices[name]
                    noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * sigma
                    p.add_(noise.to(device=p.device, dtype=p.dtype))
        yield weight_change({name: p.detach() for name, p in matrices.items()}, original)
    finally:
        with torch.no_grad():
            for name, p in matrices.items():
                p.copy_(original[name])


def check_sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    if not sigmas:
        raise UserError("give at least one noise scale σ")
    bad = [s for s in sigmas if not (math.isfinite(s) and s >= 0)]
    if bad:
        raise UserError(f"noise scales {bad} must be finite and >= 0 (σ of N(0, σ²); 0 = the original weights)")
    return tuple(sorted(dict.fromkeys(float(s) for s in sigmas)))


@dataclass(frozen=True)
class PerturbPoint:
    method: str  # "icl", or "zs" (zero-shot: no demonstrations, original weights; once, at σ = 0)
    sigma: float
    seed: int  # demonstration seed, and the noise's seed with σ
    relative_change: float
    mean_relative_change: float
    accuracy: float
    true_k: int  # demonstrations that fit the context (0 for zero-shot)
    n_eval: int


class TaskPrompts:
    """The rows and prompts of ``iclgd compare`` for one task at k demonstrations, per demonstration seed."""

    def __init__(self, model: str, task: str, *, k: int, seeds: Sequence[int], eval_size: int | None,
                 template: int | str, device: str) -> None:
        from iclgd.experiments.compare import select_rows
        from iclgd.tasks import load_splits, load_task

        if k < 1:
            raise UserError(f"k = {k} demonstrations: give k >= 1 (zero-shot accuracy is reported beside ICL)")
        if not seeds or min(seeds) < 0:
            raise UserError(f"demonstration seeds {list(seeds)} must be >= 0; give at least one")
        self.task = load_task(task)
        if eval_size is not None:  # said once here, not once per seed
            n_eval = len(load_splits(self.task).eval)
            if eval_size > n_eval:
                warn(f"eval_size {eval_size} is more than the {n_eval} rows of {task}'s eval split: "
                     f"evaluating on {n_eval}")
                eval_size = n_eval
        self.model, self.task_name, self.k, self.seeds = model, task, k, tuple(dict.fromkeys(seeds))
        self.eval_size, self.template, self.device = eval_size, template, device
        self.rows = {seed: select_rows(self._config(seed)) for seed in self.seeds}

    def _config(self, seed: int):
        from iclgd.experiments.config import CompareConfig

        return CompareConfig(model=self.model, task=self.task_name, template=self.template, shots=self.k, seed=seed,
                             eval_size=self.eval_size, device=self.device)

    def prompts(self, lm) -> dict:
        """seed -> Prompts, tokenised for ``lm`` (label words of any length: accuracy only)."""
        from iclgd.experiments.compare import prepare_unit

        return {seed: prepare_unit(self._config(seed), lm, self.rows[seed], lr_search_rows=False,
                                   single_token_labels=False).prompts for seed in self.seeds}

    @property
    def chance(self) -> float:
        return 1 / len(self.task.label_words)


def majority_rate(prompts) -> float:
    """Accuracy of always answering the commonest gold label: where a broken model that repeats one label lands."""
    golds = [query.gold for query in prompts.queries]
    return max(golds.count(label) for label in set(golds)) / len(golds)


def perturbation(model: str, task: str, *, k: int = 8, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                 seeds: Sequence[int] = (1,), weights: str = "all", eval_size: int | None = 100,
                 template: int | str = 0, batch_size: int = 16, device: str = "cpu",
                 progress: Callable[[], None] | None = None) -> tuple[list[PerturbPoint], dict[str, Any]]:
    """ICL accuracy for every (seed, σ) with N(0, σ²) noise on the ``weights`` set, and zero-shot accuracy at σ = 0.
    Returns the points and facts for the record (model, weight set, parameters perturbed)."""
    from iclgd.experiments.passes import label_accuracy
    from iclgd.models.loading import load_model

    sigmas = check_sigmas(sigmas)
    check_weight_set(weights)
    check_device(device)
    rows = TaskPrompts(model, task, k=k, seeds=seeds, eval_size=eval_size, template=template, device=device)
    lm = load_model(model, device=device)
    prompts = rows.prompts(lm)
    matrices = weight_matrices(lm.model, weights)
    original = {name: p.detach().clone() for name, p in matrices.items()}  # one copy for every σ
    first = prompts[rows.seeds[0]]
    zero_shot = label_accuracy(lm, first, with_demos=False, batch_size=batch_size)
    points = [PerturbPoint("zs", 0.0, rows.seeds[0], 0.0, 0.0, zero_shot, 0, len(first.queries))]
    for seed in rows.seeds:
        for sigma in sigmas:
            with perturbed(matrices, sigma, seed, original) as change:
                accuracy = label_accuracy(lm, prompts[seed], with_demos=True, batch_size=batch_size)
            points.append(PerturbPoint("icl", sigma, seed, change.relative, change.mean_relative, accuracy,
                                       prompts[seed].true_k, len(prompts[seed].queries)))
            if progress is not None:
                progress()
    facts = {"family": lm.family.name, "hidden_size": lm.config.hidden_size, "n_layers": lm.n_layers,
             "weights": weights, "weight_set": WEIGHT_SETS[weights], "n_matrices": len(matrices),
             "n_parameters_perturbed": sum(p.numel() for p in matrices.values()), "chance": rows.chance,
             "majority": majority_rate(first), "eval_size": len(first.queries), "provenance": lm.provenance}
    return points, facts


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


def step_number(folder: str | Path) -> int:
    """The training step a checkpoint folder is named by: the number that ends its name (``step-000500``)."""
    match = re.search(r"(\d+)$", Path(folder).name)
    if match is None:
        raise UserError(f"checkpoint {folder} has no step number at the end of its name: name the model folders "
                        "by step (step-500, step-1000, ...)")
    return int(match.group(1))


def checkpoint_folders(path: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint in ``path``, by step: its subfolders holding a config.json, each named with
    its step number (``step-000500``). A pretrain run folder stands for its ``checkpoints/`` folder."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"checkpoint folder {path} does not exist or is not a folder: give a pretrain run folder "
                        "(iclgd pretrain --keep-every N) or a folder of model folders named by step")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    found = []
    for folder in sorted(p for p in path.iterdir()  # ".tmp-…" folders are writes in progress or killed
                         if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()):
        found.append((step_number(folder), folder))
    if not found:
        raise UserError(f"{path} holds no checkpoints (no subfolder with a config.json): pretrain with "
                        "--keep-every N, or give a folder of model folders named by step")
    steps = [step for step, _ in found]
    if len(set(steps)) != len(steps):
        raise UserError(f"{path} holds two checkpoints of the same step: keep one model folder per step")
    return sorted(found)


def check_reference(reference: str) -> str:
    if reference not in REFERENCES:
        raise UserError(f"unknown reference checkpoint {reference!r}: use {' or '.join(REFERENCES)}")
    return reference


@dataclass(frozen=True)
class CheckpointPoint:
    method: str  # "icl" or "zs" (zero-shot: once per checkpoint)
    step: int
    checkpoint: str  # the folder's name
    seed: int
    relative_change: float  # to the reference checkpoint (the final or the first)
    mean_relative_change: float
    accuracy: float
    true_k: int
    n_eval: int


def _matrix_copies(model: nn.Module, weights: str) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in weight_matrices(model, weights).items()}


def checkpoint_series(checkpoints: str | Path, task: str, *, k: int = 8, seeds: Sequence[int] = (1,),
                      reference: str = "final", weights: str = "all", thresholds: Sequence[float] = THRESHOLDS,
                      eval_size: int | None = 100, template: int | str = 0, batch_size: int = 16,
                      device: str = "cpu", progress: Callable[[], None] | None = None
                      ) -> tuple[list[CheckpointPoint], list[dict[str, Any]], dict[str, Any]]:
    """For every checkpoint: ICL accuracy per seed and zero-shot accuracy, with the relative change of the ``weights``
    set to the ``reference`` checkpoint ("final" or "first"), and the sparsity rows of W_Q/W_K/W_V (with its step).
    Returns (points, sparsity rows, facts for the record)."""
    from iclgd.experiments.passes import label_accuracy
    from iclgd.models.loading import load_model

    check_reference(reference)
    check_weight_set(weights)
    thresholds = check_thresholds(thresholds)
    check_device(device)
    folders = checkpoint_folders(checkpoints)
    rows = TaskPrompts(str(folders[0][1]), task, k=k, seeds=seeds, eval_size=eval_size, template=template,
                       device=device)
    ref_step, ref_folder = folders[0] if reference == "first" else folders[-1]  # "final"
    ref = _matrix_copies(load_model(str(ref_folder)).model, weights)
    points, sparsity_rows = [], []
    for step, folder in folders:
        lm = load_model(str(folder), device=device)
        change = weight_change(_matrix_copies(lm.model, weights), ref)
        prompts = rows.prompts(lm)
        first = prompts[rows.seeds[0]]
        zero_shot = label_accuracy(lm, first, with_demos=False, batch_size=batch_size)
        points.append(CheckpointPoint("zs", step, folder.name, rows.seeds[0], change.relative, change.mean_relative,
                                      zero_shot, 0, len(first.queries)))
        for seed in rows.seeds:
            accuracy = label_accuracy(lm, prompts[seed], with_demos=True, batch_size=batch_size)
            points.append(CheckpointPoint("icl", step, folder.name, seed, change.relative, change.mean_relative,
                                          accuracy, prompts[seed].true_k, len(prompts[seed].queries)))
        sparsity_rows += [{"step": step, **asdict(row)} for row in weight_sparsity(lm.model, thresholds)]
        if progress is not None:
            progress()
    facts = {"checkpoints": [str(folder) for _, folder in folders], "reference": reference,
             "reference_step": ref_step, "family": lm.family.name, "hidden_size": lm.config.hidden_size,
             "n_layers": lm.n_layers, "weights": weights, "weight_set": WEIGHT_SETS[weights],
             "n_matrices": len(ref), "chance": rows.chance, "majority": majority_rate(first),
             "eval_size": len(first.queries)}
    return points, sparsity_rows, facts


# ----------------------------------------------------------------------------------------------------------
# Writing


def _record(command: str, fields: dict[str, Any]) -> dict[str, Any]:
    from iclgd.runner.store import library_versions

    return {"command": command, "created_at": datetime.now(UTC).isoformat(timespec="seconds"), **fields,
            "versions": library_versions()}


def write_record(record: dict[str, Any], path: Path) -> Path:
    from iclgd.runs import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def run_sparsity(model: str, out: str | Path, *, thresholds: Sequence[float] = THRESHOLDS
                 ) -> tuple[list[SparsityRow], dict[str, Any], list[Path]]:
    """Sparsity of ``model`` written under ``out``: sparsity.parquet, record.json, sparsity.png / .pdf."""
    from iclgd.models.loading import load_model
    from iclgd.report.weights import plot_sparsity

    thresholds = check_thresholds(thresholds)
    out = check_output_dir(out)
    lm = load_model(model)
    rows = weight_sparsity(lm.model, thresholds)
    record = _record("weights sparsity", {
        "model": model, "family": lm.family.name, "hidden_size": lm.config.hidden_size, "n_layers": lm.n_layers,
        "thresholds": list(thresholds), "construction": construction_sparsity(lm.config.hidden_size),
        "dtype": str(lm.dtype), "provenance": lm.provenance})
    paths = [write_parquet([asdict(r) for r in rows], out / "sparsity.parquet", record),
             write_record(record, out / "record.json")]
    paths += plot_sparsity(rows, out / "sparsity", title=f"{Path(model).name} (d = {lm.config.hidden_size})")
    return rows, record, paths


def run_perturbation(model: str, task: str, out: str | Path, *, k: int = 8, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                     seeds: Sequence[int] = (1,), weights: str = "all", eval_size: int | None = 100,
                     template: int | str = 0, batch_size: int = 16, device: str = "cpu", show_progress: bool = True
                     ) -> tuple[list[PerturbPoint], dict[str, Any], list[Path]]:
    """The perturbation curve written under ``out``: perturb.parquet, record.json, perturb.png / .pdf."""
    from iclgd.report.weights import plot_accuracy_vs_change

    sigmas = check_sigmas(sigmas)
    check_weight_set(weights)
    out = check_output_dir(out)
    with _bar("perturb", len(sigmas) * len(seeds), show_progress) as advance:
        points, facts = perturbation(model, task, k=k, sigmas=sigmas, seeds=seeds, weights=weights,
                                     eval_size=eval_size, template=template, batch_size=batch_size, device=device,
                                     progress=advance)
    record = _record("weights perturb", {"model": model, "task": task, "k": k, "sigmas": list(sigmas),
                                         "seeds": list(seeds), "template": template, **facts})
    paths = [write_parquet([asdict(p) for p in points], out / "perturb.parquet", record),
             write_record(record, out / "record.json")]
    paths += plot_accuracy_vs_change(points, out / "perturb", chance=facts["chance"], majority=facts["majority"],
                                     title=f"{task_name(task)}, k = {k}: {Path(model).name}, noise on {weights}")
    return points, record, paths


def run_checkpoints(checkpoints: str | Path, task: str, out: str | Path, *, k: int = 8, seeds: Sequence[int] = (1,),
                    reference: str = "final", weights: str = "all", thresholds: Sequence[float] = THRESHOLDS,
                    eval_size: int | None = 100, template: int | str = 0, batch_size: int = 16,
                    device: str = "cpu", show_progress: bool = True
                    ) -> tuple[list[CheckpointPoint], list[dict[str, Any]], dict[str, Any], list[Path]]:
    """The checkpoint series written under ``out``: checkpoints.parquet, checkpoint-sparsity.parquet, record.json,
    checkpoints.png / .pdf."""
    from iclgd.report.weights import plot_checkpoints

    thresholds = check_thresholds(thresholds)
    check_reference(reference)
    check_weight_set(weights)
    out = check_output_dir(out)
    total = len(checkpoint_folders(checkpoints))
    with _bar("checkpoints", total, show_progress) as advance:
        points, sparsity_rows, facts = checkpoint_series(
            checkpoints, task, k=k, seeds=seeds, reference=reference, weights=weights, thresholds=thresholds,
            eval_size=eval_size, template=template, batch_size=batch_size, device=device, progress=advance)
    record = _record("weights checkpoints", {"task": task, "k": k, "seeds": list(seeds), "template": template,
                                             "thresholds": list(thresholds), **facts})
    paths = [write_parquet([asdict(p) for p in points], out / "checkpoints.parquet", record),
             write_parquet(sparsity_rows, out / "checkpoint-sparsity.parquet", record),
             write_record(record, out / "record.json")]
    paths += plot_checkpoints(points, sparsity_rows, out / "checkpoints", chance=facts["chance"],
                              majority=facts["majority"],
                              title=f"{task_name(task)}, k = {k}: {Path(checkpoints).name}")
    return points, sparsity_rows, record, paths


@contextmanager
def _bar(name: str, total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not enabled,
                  transient=True) as bar:
        job = bar.add_task(name, total=total)
        yield lambda: bar.advance(job)
