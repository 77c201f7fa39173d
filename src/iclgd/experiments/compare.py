"""One comparison unit: ZS, ICL and every FT method on the same demonstrations, then the metrics.

    task -> demos (seeded) -> prompts (true k, one prefix) -> finetune each method (K/V, SGD)
    -> per batch of eval examples: ZS, ICL (shared prefix), FT (trained K/V swapped in), random direction
    -> per-example, per-layer metric values -> means -> one results record

The passes are interleaved per batch, so memory holds one batch of captures at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iclgd import finetune as finetuning
from iclgd import metrics
from iclgd.errors import UserError, warn
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.passes import interleaved_passes, label_accuracy
from iclgd.models.capture import Capture, encode_prefix
from iclgd.models.loading import LoadedModel, load_model
from iclgd.prompts.scoring import BatchScores
from iclgd.prompts.sequences import Prompts, build_prompts
from iclgd.runner.store import UnitResult, layer_rows, library_versions, metric_row
from iclgd.tasks import (
    eval_subset,
    load_splits,
    load_task,
    order_permutation,
    permute,
    render_input,
    sample_demo_indices,
)

# ----------------------------------------------------------------------------------------------------------
# Inputs: task, demos, prompts


@dataclass
class UnitPrompts:
    task: Any
    prompts: Prompts  # demos in the unit's order, eval queries
    tune: Prompts | None  # held-out training rows for the lr search (queries only)
    info: dict[str, Any]  # what the record keeps about the inputs


def bos_and_separator(cfg: CompareConfig, task, lm: LoadedModel) -> tuple[str | None, str]:
    """The config wins, then the task file (literal text, "" for none), then the family table."""
    if cfg.bos is not None:
        bos = None if cfg.bos in ("none", "") else cfg.bos
    elif task.bos is not None:
        bos = task.bos or None
    else:
        bos = lm.family.bos
    sep = cfg.separator if cfg.separator is not None else task.separator
    return bos, sep or lm.family.sep


def model_context(lm: LoadedModel, default: int | None = None) -> int:
    config = lm.model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    if default is not None:
        return default
    raise UserError("the model config gives no context length: set `max_context` in the config")


@dataclass
class UnitRows:
    """The rows of one unit, chosen before any model is loaded (bad input fails fast)."""

    task: Any
    template: str
    demo_rows: list[int]  # pool indices, sampled order
    pool: list
    eval_rows: list
    revision: str


def select_rows(cfg: CompareConfig) -> UnitRows:
    task = load_task(cfg.task)
    template = task.template(cfg.template)
    data = load_splits(task, data_dir=cfg.data_dir)
    demo_rows = sample_demo_indices([ex.label for ex in data.pool], cfg.shots, cfg.seed, balanced=cfg.balanced)
    eval_rows = eval_subset(data.eval, cfg.eval_size or task.eval_size, seed=1)
    if not eval_rows:
        raise UserError(f"task {task.name} has no eval rows: check its eval split")
    if cfg.eval_size and cfg.eval_size > len(eval_rows):
        warn(f"eval_size {cfg.eval_size} is more than the {len(eval_rows)} rows of {task.name}'s eval split: "
             f"evaluating on {len(eval_rows)} (recorded as eval_size)")
    return UnitRows(task, template, [int(i) for i in demo_rows], data.pool, eval_rows, data.revision)


def prepare_unit(cfg: CompareConfig, lm: LoadedModel, rows: UnitRows, *,
                 single_token_labels: bool = True, lr_search_rows: bool = True) -> UnitPrompts:
    """The tokenised prompts of one unit (demos in the unit's order) and, for an lr search, held-out rows."""
    task, template = rows.task, rows.template
    label_names = list(task.label_words)
    demos = [rows.pool[i] for i in rows.demo_rows]
    bos, sep = bos_and_separator(cfg, task, lm)
    max_context = cfg.max_context or model_context(lm)
    if max_context > model_context(lm, max_context):
        raise UserError(f"max_context {max_context} is longer than the context of {cfg.model} "
                        f"({model_context(lm)} positions): lower --max-context or leave it out")

    def prompts_for(examples):
        return build_prompts(
            lm.tokenizer,
            demo_inputs=[render_input(template, ex) for ex in demos],
            demo_labels=[label_names.index(ex.label) for ex in demos],
            eval_inputs=[render_input(template, ex) for ex in examples],
            eval_labels=[label_names.index(ex.label) for ex in examples],
            label_words=[task.label_words[name] for name in label_names],
            bos=bos, sep=sep, max_context=max_context, single_token_labels=single_token_labels,
        )

    sampled = prompts_for(rows.eval_rows)
    order = order_permutation(cfg.seed, cfg.order, sampled.true_k)
    prompts = sampled.reordered(order)
    tune = None
    if cfg.lr is None and lr_search_rows:  # held-out training rows, disjoint from the demos, for a learning-rate search
        used = set(rows.demo_rows)
        rest = [rows.pool[int(i)] for i in permute(len(rows.pool), cfg.seed) if int(i) not in used]
        tune = prompts_for(rest[: cfg.lr_search_rows]) if rest else None
    info = {
        "task": task.name, "template": template, "label_words": dict(task.label_words),
        "dataset_revision": rows.revision, "bos": bos, "separator": sep, "bos_ids": prompts.bos_ids,
        "sep_ids": prompts.sep_ids, "label_ids": prompts.label_ids, "max_context": max_context,
        "requested_k": prompts.requested_k, "true_k": prompts.true_k,
        "order_permutation": [int(i) for i in order], "demo_rows": [rows.demo_rows[i] for i in order],
        "eval_rows": [ex.row for ex in rows.eval_rows], "eval_size": len(rows.eval_rows),
    }
    return UnitPrompts(task, prompts, tune, info)


# ----------------------------------------------------------------------------------------------------------
# Finetuning


@dataclass
class TrainedMethod:
    name: str
    tensors: dict[str, torch.Tensor]
    random_direction: dict[str, torch.Tensor]  # GD only: the "better random" baseline's weights
    train_queries: torch.Tensor | None  # [L, N_demo_tokens, D], for Kendall
    grad_norms: torch.Tensor  # [steps, L]


def choose_lr(cfg: CompareConfig, lm: LoadedModel, task_name: str, unit: UnitPrompts) -> tuple[float, str]:
    """The unit's learning rate and how it was chosen: the config, the published table, or a search.

    The search finetunes on the unit's demos at every point of Dai's grid and scores FT accuracy on
    held-out training rows (disjoint from the demos), never on the eval set.
    """
    if cfg.lr is not None:
        return cfg.lr, "config"
    published = finetuning.published_lr(cfg.model, task_name)
    if published is not None:
        return published, "published (Dai et al. 2023)"
    tune = unit.tune
    if tune is None or not tune.queries:
        raise UserError(
            f"no learning rate for {cfg.model} on {task_name}: no published value and no pool rows left "
            "beside the demos for a search; pass --lr"
        )
    original = finetuning.snapshot(lm)

    def held_out_accuracy(tensors: dict[str, torch.Tensor]) -> float:
        finetuning.swap_in(lm, tensors)
        try:
            return label_accuracy(lm, tune, with_demos=False, batch_size=cfg.batch_size)
        finally:
            finetuning.restore(lm, original)

    search = finetuning.search_lr(lm, unit.prompts.training_sequences(), held_out_accuracy)
    return search.lr, f"search on Dai's grid: FT accuracy on {len(tune.queries)} held-out training rows"


def random_direction(lm: LoadedModel, original: dict, trained: dict, seed: int) -> dict[str, torch.Tensor]:
    """Original + a Gaussian direction scaled, per tensor, to the Frobenius norm of that tensor's FT change."""
    generator = torch.Generator().manual_seed(seed)
    masks = {s.name: s.mask for s in finetuning.trainable_slices(lm)}
    out = {}
    for name, before in original.items():
        change = trained[name].float() - before.float()
        noise = torch.randn(before.shape, generator=generator, dtype=torch.float32)
        if masks.get(name) is not None:
            noise = noise * masks[name].to(noise.dtype)
        norm = noise.norm()
        scale = change.norm() / norm if norm > 0 else torch.tensor(0.0)
        out[name] = before.float() + noise * scale
    return out


def finetune_methods(cfg: CompareConfig, lm: LoadedModel, prompts: Prompts, lr: float, original: dict,
                     progress: Progress) -> dict[str, TrainedMethod]:
    """Every FT method on the same demos, in the ICL order; the model is left with its original weights."""
    sequences = prompts.training_sequences()
    trained = {}
    for method in cfg.methods:
        bar = progress.add_task(f"finetune ({method})", total=len(sequences))
        record_queries = method == "gd" and cfg.kendall_examples > 0
        result = finetuning.finetune(
            lm, sequences, lr, method=method, record_queries=record_queries, bos_length=len(prompts.bos_ids),
            on_step=lambda *_, bar=bar: progress.advance(bar),
        )
        if result.train_tokens is not None:
            # Kendall pairs the j-th ICL demo token with the j-th FT training token: one and the same token.
            metrics.check_same_demo_tokens(torch.tensor(prompts.prefix_ids)[prompts.demo_positions],
                                           result.train_tokens)
        direction = random_direction(lm, original, result.tensors, cfg.seed) if method == "gd" else {}
        trained[method] = TrainedMethod(method, result.tensors, direction, result.train_queries, result.grad_norms)
        progress.remove_task(bar)
    return trained


# ----------------------------------------------------------------------------------------------------------
# Per-batch metric values


class Accumulator:
    """Per-example values of each (method, metric), [N, L], gathered batch by batch, with zero-Δ counts, and
    per-pass counts of the test-token keys a window hid (spec: excluded and counted)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.zeros: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.cases_per_example: dict[tuple[str, str], int] = {}
        self.masked_keys: dict[str, torch.Tensor] = {}  # pass -> [L] keys hidden
        self.test_keys: dict[str, int] = {}  # pass -> test-token keys seen per layer

    def add_masked_keys(self, name: str, capture: Capture) -> None:
        hidden = capture.masked_keys.sum(0)
        self.masked_keys[name] = self.masked_keys.get(name, torch.zeros_like(hidden)) + hidden
        self.test_keys[name] = self.test_keys.get(name, 0) + int(capture.test_length.sum())

    def add(self, method: str, metric: str, result: metrics.LayerAverage, cases_per_example: int = 1) -> None:
        """``cases_per_example``: cosines behind one example's value (heads for SimAM), for the zero counts."""
        key = (method, metric)
        self.values.setdefault(key, []).append(result.per_example.double())
        self.zeros.setdefault(key, []).append(result.zero_per_example.long())
        self.cases_per_example[key] = cases_per_example

    def rows(self, keys: dict[str, Any]) -> list[dict[str, Any]]:
        """Per-layer rows and the layer-null mean, plus a `*_zero_count` companion for every metric
        (value: cases counted as zero; count: cases tested)."""
        rows = []
        for (method, metric), chunks in self.values.items():
            per_example = torch.cat(chunks)
            zeros = torch.cat(self.zeros[(method, metric)]).sum(0)
            n = per_example.shape[0]
            tested = n * self.cases_per_example[(method, metric)]
            stream = f"{method}/{metric}"
            low, high = metrics.bootstrap_ci(per_example, keys["seed"], stream)
            mean_low, mean_high = metrics.bootstrap_ci(per_example.mean(1), keys["seed"], stream)
            rows += layer_rows(metric, per_example.mean(0).tolist(), n, method=method,
                               cis=list(zip(low.tolist(), high.tolist(), strict=True)),
                               mean_ci=(float(mean_low), float(mean_high)), **keys)
            rows += layer_rows(f"{metric}_zero_count", zeros.double().tolist(), tested, method=method, **keys)
        for name, hidden in self.masked_keys.items():
            rows += layer_rows("masked_key_count", hidden.double().tolist(), self.test_keys[name], method=name,
                               **keys)
        return rows + self.baseline_rows(keys)

    def baseline_rows(self, keys: dict[str, Any]) -> list[dict[str, Any]]:
        """Paired comparisons of a score with each baseline computed on the same examples: the per-example
        difference of their layer means, its mean and its 95% bootstrap interval, as metric ``<score>_vs_<name>``
        (method: the FT method). A score beats its baseline where the interval lies above 0."""
        rows = []
        for (method, metric), chunks in self.values.items():
            for name, (baseline_method, baseline_metric) in BASELINES.get(metric, {}).items():
                baseline = self.values.get((baseline_method or method, baseline_metric))
                if baseline is None:
                    continue
                difference = torch.cat(chunks).mean(1) - torch.cat(baseline).mean(1)
                ci = metrics.bootstrap_ci(difference, keys["seed"], f"{method}/{metric}_vs_{name}")
                rows.append(metric_row(f"{metric}_vs_{name}", float(difference.mean()), difference.numel(),
                                       method=method, ci=(float(ci[0]), float(ci[1])), **keys))
        return rows


# Each similarity score's within-unit baselines: name -> (method, metric), method None = the score's own FT method.
BASELINES: dict[str, dict[str, tuple[str | None, str]]] = {
    "simaou_norm": {"random": ("icl", "simaou_norm_random"),
                    "random_direction": (None, "simaou_norm_random_direction")},
    "simaou": {"random": ("icl", "simaou_random"), "random_direction": (None, "simaou_random_direction")},
    "simam": {"before": ("icl", "simam_before")},
    "kendall": {"random": (None, "kendall_random")},
}


def batch_metrics(acc: Accumulator, captures: dict[str, Capture], trained: dict[str, TrainedMethod],
                  examples: list[int], kendall_rows: torch.Tensor, seed: int) -> None:
    """Every similarity metric of one batch, per example and layer (spec/metrics.md).

    ``examples``: the eval indices of the batch's rows; the random baselines draw per example from
    (seed, example index), so no value depends on the batch size.
    """
    zs, icl = captures["zs"], captures["icl"]
    h_zs, h_icl = zs.attention_output, icl.attention_output
    m_zs, m_icl, lengths = zs.presoftmax_logits, icl.presoftmax_logits, zs.test_length
    u = metrics.uniform_per_example(seed, examples, h_icl.shape[1:], "simaou_random")
    acc.add("icl", "simaou_norm_random", metrics.simaou_random(h_icl, h_zs, u, normalised=True))
    acc.add("icl", "simaou_random", metrics.simaou_random(h_icl, h_zs, u, normalised=False))
    heads = m_icl.shape[2]
    acc.add("icl", "simam_before", metrics.simam_before_ft(m_icl, m_zs, lengths), heads)
    for method in trained:
        ft = captures[method]
        acc.add(method, "simaou_norm", metrics.simaou_norm(h_icl, h_zs, ft.attention_output))
        acc.add(method, "simaou", metrics.simaou(h_icl, h_zs, ft.attention_output))
        acc.add(method, "simam", metrics.simam(m_icl, ft.presoftmax_logits, lengths), heads)
        acc.add(method, "simam_delta", metrics.simam_delta(m_icl, m_zs, ft.presoftmax_logits, lengths), heads)
        queries = trained[method].train_queries
        if queries is not None and len(kendall_rows):
            m_icl_demo = icl.demo_logits[kendall_rows]
            m_ft_demo = metrics.ft_demo_logits(ft.analysis_query[kendall_rows], queries)
            u_demo = metrics.uniform_per_example(seed, [examples[int(r)] for r in kendall_rows], m_icl_demo.shape[1:],
                                                 "kendall_random")
            acc.add(method, "kendall", metrics.kendall(m_icl_demo, m_ft_demo))
            acc.add(method, "kendall_random", metrics.kendall_random(m_icl_demo, u_demo))
        if f"{method}:random_direction" in captures:
            h_rand = captures[f"{method}:random_direction"].attention_output
            acc.add(method, "simaou_norm_random_direction",
                    metrics.simaou_better_random(h_icl, h_zs, h_rand, normalised=True))
            acc.add(method, "simaou_random_direction",
                    metrics.simaou_better_random(h_icl, h_zs, h_rand, normalised=False))
    if "gd" in trained and "lcgd" in trained:
        acc.add("lcgd_vs_gd", "alpha", metrics.alpha(captures["lcgd"].presoftmax_logits,
                                                     captures["gd"].presoftmax_logits, m_zs, lengths), heads)


# ----------------------------------------------------------------------------------------------------------
# The unit


def run_compare(cfg: CompareConfig, *, show_progress: bool = True) -> UnitResult:
    """Run one unit and return its records; nothing is written here (the store writes them atomically)."""
    started = time.time()
    transformers.utils.logging.disable_progress_bar()
    rows = select_rows(cfg)
    lm = load_model(cfg.model, dtype=cfg.dtype, untrained=cfg.untrained, seed=cfg.seed, device=cfg.device)
    unit = prepare_unit(cfg, lm, rows)
    prompts = unit.prompts
    timings: dict[str, float] = {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=not show_progress, transient=True)
    with progress:
        mark = time.time()
        original = finetuning.snapshot(lm)
        lr, lr_source = choose_lr(cfg, lm, unit.task.name, unit)
        trained = finetune_methods(cfg, lm, prompts, lr, original, progress)
        timings["finetune_s"] = time.time() - mark

        mark = time.time()
        prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids, dtype=torch.long))
        weights = {}  # each FT method and its random-direction control, swapped in for their passes
        for method, t in trained.items():
            weights[method] = t.tensors
            if t.random_direction:
                weights[f"{method}:random_direction"] = t.random_direction
        acc = Accumulator()
        outputs: dict[str, list[torch.Tensor]] = {}
        captures: list[dict[str, torch.Tensor]] = []
        bar = progress.add_task("ZS / ICL / FT passes", total=len(prompts.queries))
        passes = interleaved_passes(
            lm, prompts, prefix=prefix, weights=weights, original=original, batch_size=cfg.batch_size,
            position=cfg.position,
            demo_logits=lambda indices: cfg.captures == "full" or indices[0] < cfg.kendall_examples,
        )
        for indices, scores in passes:
            kendall_rows = torch.tensor([i for i, row in enumerate(indices) if row < cfg.kendall_examples],
                                        dtype=torch.long)
            batch_metrics(acc, {name: s.capture for name, s in scores.items()}, trained, indices, kendall_rows,
                          cfg.seed)
            for name, s in scores.items():
                if ":" not in name:  # ZS, ICL and each FT method (the random direction masks as FT does)
                    acc.add_masked_keys(name, s.capture)
                outputs.setdefault(name, []).append(s.candidate_logprobs)
                outputs.setdefault(f"{name}:fullvocab", []).append(s.next_token_logprobs.argmax(-1))
            if cfg.captures != "none":
                captures.append(compact_captures(indices, scores, full=cfg.captures == "full"))
            progress.advance(bar, len(indices))
        timings["passes_s"] = time.time() - mark

    keys = unit_keys(cfg, unit.info)
    accuracy_rows, predictions = accuracy_and_predictions(prompts, outputs, list(trained), keys)
    table = accuracy_rows + acc.rows(keys) + grad_norm_rows(trained, keys)
    if cfg.captures == "full":
        for method, t in trained.items():
            if t.train_queries is not None:
                captures.append({f"{method}.blocks.{layer}.train_q": q for layer, q in enumerate(t.train_queries)})
    record = {
        "config": cfg.model_dump(),
        "versions": library_versions(),
        "analysis_position": cfg.position,
        "dtype": cfg.dtype,
        "model": {"name": cfg.model, "family": lm.family.name, "revision": lm.source_revision,
                  "untrained": cfg.untrained, "provenance": lm.provenance},
        "lr": lr,
        "lr_source": lr_source,
        **unit.info,
        "timings": {**{k: round(v, 3) for k, v in timings.items()}, "total_s": round(time.time() - started, 3)},
    }
    return UnitResult(metrics=table, predictions=predictions, record=record, captures=captures, captures_dtype=None)


def unit_keys(cfg: CompareConfig, info: dict) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "variant": f"untrained:{cfg.untrained}" if cfg.untrained else "trained",
        "task": info["task"],
        "template": cfg.template if isinstance(cfg.template, int) else -1,
        "seed": cfg.seed,
        "order": cfg.order,
        "k": cfg.shots,
        "true_k": info["true_k"],
    }


def grad_norm_rows(trained: dict[str, TrainedMethod], keys: dict[str, Any]) -> list[dict[str, Any]]:
    """Deutch et al. Fig. 4: the per-layer gradient norm before step j, as metric `grad_norm_step{j}`."""
    rows = []
    for method, t in trained.items():
        for step, per_layer in enumerate(t.grad_norms.tolist()):
            rows += [metric_row(f"grad_norm_step{step}", v, 1, method=method, layer=layer, **keys)
                     for layer, v in enumerate(per_layer)]
    return rows


def accuracy_and_predictions(prompts: Prompts, outputs: dict[str, list[torch.Tensor]], methods: list[str],
                             keys: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Label-word and full-vocabulary accuracy per pass (and of always predicting the most frequent label, under
    method "majority"), Rec2FTP per method, per-example predictions."""
    gold = torch.tensor([q.gold for q in prompts.queries])
    gold_first = torch.tensor([prompts.label_ids[q.gold][0] for q in prompts.queries])
    correct: dict[str, torch.Tensor] = {}
    n = len(gold)
    rows = [metric_row("accuracy", metrics.majority_accuracy(gold), n, method="majority", **keys)]
    predictions = []
    for name in ["zs", "icl", *methods]:
        candidate = torch.cat(outputs[name])
        fullvocab = torch.cat(outputs[f"{name}:fullvocab"])
        predicted = metrics.label_predictions(candidate)
        correct[name] = predicted == gold
        fullvocab_correct = fullvocab == gold_first
        for metric, value, hits in (("accuracy", metrics.accuracy(predicted, gold), correct[name]),
                                    ("fullvocab_accuracy", metrics.accuracy(fullvocab, gold_first), fullvocab_correct)):
            ci = metrics.bootstrap_ci(hits.double(), keys["seed"], f"{name}/{metric}")
            rows.append(metric_row(metric, value, n, method=name, ci=ci, **keys))
        predictions += [{
            "example": i, "method": name, "gold": int(gold[i]), "prediction": int(predicted[i]),
            "correct": bool(correct[name][i]), "candidate_logprobs": candidate[i].tolist(),
            "fullvocab_token": int(fullvocab[i]), "fullvocab_correct": bool(fullvocab_correct[i]),
        } for i in range(n)]
    zs_wrong, icl_fixes = ~correct["zs"], ~correct["zs"] & correct["icl"]
    chance_ci = metrics.bootstrap_ratio_ci(icl_fixes * 100.0, zs_wrong, keys["seed"], "rec2ftp_chance")
    for method in methods:
        r = metrics.rec2ftp(correct["zs"], correct["icl"], correct[method])
        ft_fixes = zs_wrong & correct[method]
        ci = metrics.bootstrap_ratio_ci((ft_fixes & icl_fixes) * 100.0, ft_fixes, keys["seed"], f"{method}/rec2ftp")
        rows.append(metric_row("rec2ftp", r.value, r.count, method=method, ci=ci, **keys))
        rows.append(metric_row("rec2ftp_chance", r.chance, r.chance_count, method=method, ci=chance_ci, **keys))
    return rows, predictions


def compact_captures(indices: list[int], scores: dict[str, BatchScores], full: bool) -> dict[str, torch.Tensor]:
    """One batch's captures, named like TransformerLens hooks: ``{pass}.blocks.{l}.attn_out`` [B, d_model],
    ``{pass}.blocks.{l}.attn_scores`` [B, H, T] (pre-softmax, analysis row, test tokens; ``{pass}.test_length``
    says how many are real); with ``full`` also ``{pass}.blocks.{l}.q`` and ``icl.blocks.{l}.demo_attn_scores``.
    Kept in float32, the precision the metrics were computed from, so that they recompute exactly."""
    out = {"example": torch.tensor(indices)}
    for name, s in scores.items():
        c, name = s.capture, name.replace(":", ".")
        out[f"{name}.test_length"] = c.test_length
        for layer in range(c.attention_output.shape[1]):
            block = f"{name}.blocks.{layer}"
            out[f"{block}.attn_out"] = c.attention_output[:, layer]
            out[f"{block}.attn_scores"] = c.presoftmax_logits[:, layer]
            if full:
                out[f"{block}.q"] = c.analysis_query[:, layer]
                if c.demo_logits is not None:
                    out[f"{block}.demo_attn_scores"] = c.demo_logits[:, layer]
    return out
