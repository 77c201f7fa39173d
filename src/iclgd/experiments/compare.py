"""One comparison unit: ZS, ICL and every FT method on the same demonstrations, then the metrics.

    task -> demos (seeded) -> prompts (true k, one prefix per ordering)
    -> reference passes, per batch of eval examples: ZS, ICL (shared prefix), ICL under the other orderings
    -> per FT method (iclgd.finetune.methods), per ordering: train epoch by epoch; at each recorded epoch the FT pass
       (trained weights in place) and, for gd, the random direction, compared with the references
    -> per-example, per-layer metric values -> means with bootstrap intervals -> one results record

What grows with the eval rows waits in the unit's scratch folder, a file per batch (:class:`Scratch`): the ZS and
ICL captures the FT passes compare with, ICL's next-token distributions, the FT captures the unit stores, and the
order-sensitivity running mean and variance over orderings ([rows, V] twice per recorded epoch, :class:`OrderSpreads`).
So memory is flat in the eval set until the unit gathers its stored captures at its end. A whole-model method is
never copied per epoch: its passes run inside training.
"""

from __future__ import annotations

import ctypes
import math
import resource
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iclgd import finetune as finetuning
from iclgd import metrics
from iclgd.errors import UserError, warn, warn_once
from iclgd.experiments.accumulate import (
    Accumulator,
    PassOutputs,
    accuracy_and_predictions,
    compact_captures,
    grad_norm_rows,
)
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.passes import label_accuracy
from iclgd.finetune.methods import FTMethod
from iclgd.finetune.trajectories import gd_trajectories, supports_batched_trajectories
from iclgd.models.attention import MKL_MODE
from iclgd.models.capture import Capture, Prefix, encode_prefix
from iclgd.models.families import Family, blocks, model_context, rope_length_limit
from iclgd.models.loading import LoadedModel, load_model, model_files, model_sha256
from iclgd.progress import log_line
from iclgd.prompts.scoring import batches, score_batch
from iclgd.prompts.sequences import Prompts, build_prompts, prompt_tokens
from iclgd.runner.store import UnitResult, library_versions
from iclgd.tasks import (
    eval_subset,
    load_splits,
    load_task,
    order_permutation,
    permute,
    render_input,
    sample_demo_indices,
    template_key,
    validate_template,
)

# ----------------------------------------------------------------------------------------------------------
# Inputs: task, demos, prompts


@dataclass
class UnitPrompts:
    task: Any
    prompts: Prompts  # demos in the unit's order, eval queries
    tune: Prompts | None  # held-out training rows for the lr search (queries only)
    training: Prompts | None  # with ft_shots: the FT demos (sampled order); None: FT trains on ICL's demos
    info: dict[str, Any]  # what the record keeps about the inputs


def bos_and_separator(cfg: CompareConfig, task, family: Family) -> tuple[str | None, str]:
    """The config wins, then the task file (literal text, "" for none), then the family table."""
    if cfg.bos is not None:
        bos = None if cfg.bos in ("none", "") else cfg.bos
    elif task.bos is not None:
        bos = task.bos or None
    else:
        bos = family.bos
    sep = cfg.separator if cfg.separator is not None else task.separator
    return bos, sep if sep is not None else family.sep


def unit_max_context(cfg: CompareConfig, config) -> int:
    """The unit's context: the config's ``max_context`` (no longer than the model's), else the model's."""
    max_context = cfg.max_context or model_context(config)
    if max_context > model_context(config, max_context):
        why = (": past that its longrope scaling rotates a whole prompt by other frequencies, so prompts with and "
               "without demos, and a shared demo prefix and its prompts, would not be rotated alike"
               if rope_length_limit(config) is not None else "")
        raise UserError(f"max_context {max_context} is longer than the context of {cfg.model} "
                        f"({model_context(config)} positions{why}): lower --max-context or leave it out")
    return max_context


def check_unit_tokens(cfg: CompareConfig, task, tokenizer, config, family: Family) -> None:
    """What a unit would refuse about its model's tokenizer and config, checked without the weights: the BOS, the
    separator, the label words (one token each), the context, a trained layer out of range."""
    bos, sep = bos_and_separator(cfg, task, family)
    prompt_tokens(tokenizer, [task.label_words[name] for name in task.label_words], bos, sep)
    unit_max_context(cfg, config)
    n_layers = getattr(config, "num_hidden_layers", None)
    if isinstance(n_layers, int):
        for name in cfg.methods:
            finetuning.parse_method(name).resolve_layer(n_layers)


@dataclass
class UnitRows:
    """The rows of one unit, chosen before any model is loaded (bad input fails fast)."""

    task: Any
    template: str
    demo_rows: list[int]  # pool indices, sampled order
    training_rows: list[int] | None  # with ft_shots: the FT demos' pool indices, sampled order
    pool: list
    eval_rows: list
    revision: str


def _warn_eval_size(asked: int, n_eval: int, task: str, once: tuple | None = None) -> None:
    """Said each time, or once per process for the key ``once``."""
    message = (f"eval_size {asked} is more than the {n_eval} rows of {task}'s eval split: evaluating on {n_eval} "
               "(recorded as eval_size)")
    if once is not None:
        warn_once(("eval size", *once), message)
    else:
        warn(message)


def capped_eval_sizes(configs: list[CompareConfig]) -> list[CompareConfig]:
    """``configs`` with each eval_size above its task's eval split lowered to the split's rows (warned once): both
    evaluate every row, so they are one unit with one id, and the config stored says what was evaluated."""
    n_eval, capped = {}, []
    for cfg in configs:
        if cfg.eval_size is not None:
            data = cfg.task, cfg.data_dir
            if data not in n_eval:
                try:
                    n_eval[data] = len(load_splits(load_task(cfg.task), data_dir=cfg.data_dir).eval)
                except UserError:  # data not here (a plan or a report without it): the unit's own check says so
                    n_eval[data] = None
            if n_eval[data] is not None and 0 < n_eval[data] < cfg.eval_size:
                # said once per process: configs are rebuilt (plan, sweep, report)
                _warn_eval_size(cfg.eval_size, n_eval[data], cfg.task, once=(data, cfg.eval_size))
                cfg = cfg.model_copy(update={"eval_size": n_eval[data]})
        capped.append(cfg)
    return capped


def check_ft_shots(cfg: CompareConfig, task_name: str, n_pool: int) -> None:
    if cfg.ft_shots is not None and cfg.ft_shots > n_pool:
        raise UserError(f"ft_shots = {cfg.ft_shots} demonstrations for FT, but the pool of {task_name} has only "
                        f"{n_pool} rows: lower ft_shots")


def check_orderings(count: int, true_k: int) -> None:
    """More distinct demo orders asked for than ``true_k`` demos have (``shots`` bounds true k before the prompts)."""
    if count > math.factorial(true_k):
        raise UserError(f"{count} distinct orderings asked for, but {true_k} demos have only {math.factorial(true_k)}: "
                        "lower orderings or raise shots")


def select_rows(cfg: CompareConfig) -> UnitRows:
    task = load_task(cfg.task)
    template = task.template(cfg.template)
    data = load_splits(task, data_dir=cfg.data_dir)
    # One seeded sample serves ICL (its first `shots`) and, with ft_shots, FT (its first ft_shots).
    check_ft_shots(cfg, task.name, len(data.pool))
    sampled = sample_demo_indices([ex.label for ex in data.pool], max(cfg.shots, cfg.ft_shots or 0), cfg.seed,
                                  balanced=cfg.balanced)
    demo_rows = sampled[:cfg.shots]
    training_rows = [int(i) for i in sampled[:cfg.ft_shots]] if cfg.ft_shots else None
    eval_rows = eval_subset(data.eval, cfg.eval_size or task.eval_size, seed=1)
    if not eval_rows:
        raise UserError(f"task {task.name} has no eval rows: check its eval split")
    if cfg.eval_size and cfg.eval_size > len(eval_rows):
        _warn_eval_size(cfg.eval_size, len(eval_rows), task.name)
    validate_template(template, data.fields, where=f"task {task.name!r}", label_fields=(task.label_field,
                                                                                       task.label_name_field))
    for example in [*(data.pool[int(i)] for i in sampled), *eval_rows]:  # a row without text fails before the model
        render_input(template, example)
    return UnitRows(task, template, [int(i) for i in demo_rows], training_rows, data.pool, eval_rows, data.revision)


def prepare_unit(cfg: CompareConfig, lm: LoadedModel, rows: UnitRows, *,
                 single_token_labels: bool = True, lr_search_rows: bool = True) -> UnitPrompts:
    """The tokenised prompts of one unit (demos in the unit's order) and, for an lr search, held-out rows."""
    task, template = rows.task, rows.template
    label_names = list(task.label_words)
    demos = [rows.pool[i] for i in rows.demo_rows]
    bos, sep = bos_and_separator(cfg, task, lm.family)
    max_context = unit_max_context(cfg, lm.config)

    def prompts_for(examples, demos=demos, max_context=max_context):
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
        used = set(rows.demo_rows) | set(rows.training_rows or [])
        rest = [rows.pool[int(i)] for i in permute(len(rows.pool), cfg.seed) if int(i) not in used]
        tune = prompts_for(rest[: cfg.lr_search_rows]) if rest else None
    training = None
    if rows.training_rows is not None:  # FT's own demos: no prefix holds them, so no context bounds them
        training = prompts_for(rows.eval_rows[:1], demos=[rows.pool[i] for i in rows.training_rows],
                               max_context=2**62)
    for built in (prompts, tune, training):
        if built is not None:
            check_vocabulary(lm, built)
    info = {
        "task": task.name, "template": template, "label_words": dict(task.label_words),
        "dataset_revision": rows.revision, "bos": bos, "separator": sep, "bos_ids": prompts.bos_ids,
        "sep_ids": prompts.sep_ids, "label_ids": prompts.label_ids, "max_context": max_context,
        "requested_k": prompts.requested_k, "true_k": prompts.true_k,
        "order_permutation": [int(i) for i in order], "demo_rows": [rows.demo_rows[i] for i in order],
        "eval_rows": [ex.row for ex in rows.eval_rows], "eval_size": len(rows.eval_rows),
        "ft_demo_rows": rows.training_rows,
    }
    return UnitPrompts(task, prompts, tune, training, info)


def check_vocabulary(lm: LoadedModel, prompts: Prompts) -> None:
    """Every token id of the prompts has an embedding row: a tokenizer saved beside another model (larger than its
    vocabulary) would otherwise fail deep in the forward pass."""
    rows = lm.model.get_input_embeddings().num_embeddings
    ids = [*prompts.prefix_ids, *prompts.bos_ids, *prompts.sep_ids, *(i for label in prompts.label_ids for i in label),
           *(i for demo in prompts.demo_ids for i in demo), *(i for q in prompts.queries for i in q.input_ids)]
    largest = max(ids, default=-1)
    if largest >= rows:
        raise UserError(f"token id {largest} of the prompts is outside {lm.name}'s vocabulary of {rows} embeddings "
                        f"(its tokenizer has {len(lm.tokenizer)} tokens): the tokenizer is not this model's; save the "
                        "model with its own tokenizer")


# ----------------------------------------------------------------------------------------------------------
# The learning rate and the random-direction control


# The grid search scores held-out rows in fixed chunks of this many, so a point can be ruled out after any chunk.
GRID_CHUNK_ROWS = 25


def choose_lr(cfg: CompareConfig, lm: LoadedModel, task_name: str, unit: UnitPrompts,
              progress: Progress | None = None) -> tuple[float, str, finetuning.LrSearch | None]:
    """The unit's learning rate, how it was chosen (the config, the published table, or a search) and the search.

    The search (``cfg.lr_search``, :mod:`iclgd.finetune.lr_search`) finetunes on the unit's demos and scores FT
    accuracy on held-out training rows (disjoint from the demos), never on the eval set; ``progress`` shows it.
    """
    from iclgd.experiments.sweep import unit_label  # sweep runs compare's units

    if cfg.lr is not None:
        return cfg.lr, "config", None
    published = finetuning.published_lr(cfg.model, task_name)
    if published is not None:
        return published, "published (Dai et al. 2023)", None
    tune = unit.tune
    if tune is None or not tune.queries:
        raise UserError(
            f"no learning rate for {cfg.model} on {task_name}: no published value and no pool rows left "
            "beside the demos for a search; pass --lr"
        )
    original = finetuning.snapshot(lm)
    demos = (unit.training or unit.prompts).training_sequences()

    def held_out_correct(tensors: dict[str, torch.Tensor], rows: range) -> int:
        """How many of the held-out rows in ``rows`` the model with ``tensors`` swapped in labels right."""
        queries = tune.queries[rows.start:rows.stop]
        finetuning.swap_in(lm, tensors)
        try:
            accuracy = label_accuracy(lm, replace(tune, queries=queries), with_demos=False, batch_size=cfg.batch_size)
        finally:
            finetuning.restore(lm, original)
        return round(accuracy * len(queries))

    n_rows = len(tune.queries)
    if n_rows < cfg.lr_search_rows:
        warn_once(("lr search pool", task_name, cfg.lr_search_rows, n_rows),  # said once for a sweep's units
                  f"lr_search_rows {cfg.lr_search_rows} is more than the {n_rows} pool rows left beside the demos: "
                  f"the lr search scores {n_rows}")
    if cfg.lr_search == "grid":
        upper = len(finetuning.DAI_LR_GRID) * len(range(0, n_rows, GRID_CHUNK_ROWS))  # chunks, were none ruled out
        bar = progress.add_task("lr search (Dai's grid, chunks of held-out rows)", total=upper) if progress else None

        def on_chunk(lr: float, rows: range) -> None:
            if progress is not None:
                progress.advance(bar)

        search = finetuning.race_grid(lambda lr: finetuning.finetune_gd(lm, demos, lr).tensors, held_out_correct,
                                      n_rows, chunk_rows=GRID_CHUNK_ROWS, on_chunk=on_chunk)
        if progress is not None:
            progress.update(bar, completed=upper)
        trained = f"{len(search.scores)} of {len(finetuning.DAI_LR_GRID)} points trained"
        return search.lr, _flat(search, f"search on Dai's grid: FT accuracy on {n_rows} held-out training rows "
                                        f"(best first, {trained})", unit=unit_label(cfg)), search

    def train(lrs: list[float]) -> list[dict[str, torch.Tensor]]:
        if supports_batched_trajectories(lm):
            return gd_trajectories(lm, demos, lrs)
        return [finetuning.finetune_gd(lm, demos, lr).tensors for lr in lrs]

    search = finetuning.halving_search(train, held_out_correct, n_rows)
    return search.lr, _flat(search, f"successive halving on Dai's grid at mantissas 1 and 3: FT accuracy on up to "
                                    f"{max(search.rows.values())} of {n_rows} held-out training rows",
                            unit=unit_label(cfg)), search


def _flat(search: finetuning.LrSearch, source: str, unit: str = "") -> str:
    """``source``, marked (and warned of, naming ``unit``: a sweep's units search one by one) where every point
    scored the same: the lr is then the tie rule's; where some scored as the winner did on the same rows, it says
    which (the smallest of them is the tie rule's)."""
    if not finetuning.no_signal(search):
        best, rows = search.scores[search.lr], (search.rows or {}).get(search.lr)
        tied = sorted(lr for lr, score in search.scores.items()
                      if lr != search.lr and score == best and (search.rows or {}).get(lr) == rows)
        if tied:
            others = (f"lr {', '.join(f'{lr:g}' for lr in tied)}" if len(tied) <= 3
                      else f"{len(tied)} other lrs ({tied[0]:g} to {tied[-1]:g})")
            return f"{source}; tied with {others} at its score, the smallest by the tie rule"
        return source
    warn(f"{unit + ': ' if unit else ''}every learning rate of the search scored as the smallest did on the held-out "
         f"rows it was scored on: "
         f"lr {search.lr:g} is the smallest by the tie rule, not a measured best; give --lr to choose one")
    return f"{source}; every point scored as the smallest did, so the smallest lr by the tie rule"


def random_direction(lm: LoadedModel, original: dict, trained: dict, seed: int) -> dict[str, torch.Tensor]:
    """Original + a Gaussian direction scaled, per tensor, to the Frobenius norm of that tensor's FT change."""
    generator = torch.Generator().manual_seed(seed)
    masks = {s.name: s.mask for s in finetuning.trainable_slices(lm)}
    out = {}
    for name, before in original.items():
        change = trained[name].float() - before.float()
        noise = torch.randn(before.shape, generator=generator, dtype=torch.float32).to(before.device)  # CPU draw
        if masks.get(name) is not None:
            noise = noise * masks[name].to(noise.dtype)
        norm = noise.norm()
        scale = change.norm() / norm if norm > 0 else torch.tensor(0.0)
        out[name] = before.float() + noise * scale
    return out


# ----------------------------------------------------------------------------------------------------------
# Reference passes: ZS and ICL, once per unit


@dataclass
class Reference:
    """One batch of eval examples as the reference passes left it: what every FT pass is compared with (its ZS and
    ICL captures wait in the unit's :class:`Scratch`, under ``zs-<batch>`` and ``icl-<batch>``)."""

    batch: int
    indices: list[int]
    kendall_rows: torch.Tensor  # rows of the batch among the first kendall_examples
    kendall_demo_logits: torch.Tensor | None  # ICL's demo scores of those rows, [len(kendall_rows), L, N]


class Scratch:
    """What a unit keeps of its passes until it uses them again, one file per batch in its scratch folder, read back
    a batch at a time: the ZS and ICL captures every FT pass is compared with, ICL's next-token distributions (the
    output metrics), the FT captures the unit stores, and FT's attention scores for α. In memory they grew with the
    eval set (about 0.4 MiB a row on SmolLM2-135M, 0.2 MiB more with output metrics); on disk the unit's memory
    stays flat in it (a memory-mapped file would not: the pages it touches count as the process's own). torch saves
    and loads them bit for bit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{key.replace(':', '.')}.pt"

    def put(self, key: str, value: Capture | torch.Tensor | dict[str, torch.Tensor]) -> None:
        torch.save(vars(value) if isinstance(value, Capture) else value, self._path(key))

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def load(self, key: str) -> torch.Tensor | dict[str, torch.Tensor]:
        """What :meth:`put` saved under ``key`` (a capture comes back as its fields: :meth:`capture`)."""
        return torch.load(self._path(key), weights_only=True)

    def drop(self, key: str) -> None:
        """Delete what is no longer needed: the folder holds only what a later pass still reads."""
        self._path(key).unlink()

    def capture(self, key: str) -> Capture:
        return Capture(**self.load(key))

    def reference(self, ref: Reference) -> tuple[Capture, Capture]:
        """The ZS and ICL captures of one batch."""
        return self.capture(f"zs-{ref.batch}"), self.capture(f"icl-{ref.batch}")


def kept(capture: Capture, full: bool) -> Capture:
    """What a unit holds of a pass's capture until it writes its results: everything with ``captures: full``;
    otherwise neither the queries nor the demo scores, which only full captures store (Kendall takes its rows of
    them first), so that memory grows with the eval set by what the stored captures hold and no more."""
    if full:
        return capture
    return replace(capture, analysis_query=torch.empty(0), demo_logits=None, all_queries=None)


class OrderSpreads:
    """One method's order sensitivity (Sen) at each recorded epoch, accumulated one ordering at a time
    (:class:`metrics.RunningOrderSpread`: [rows, vocabulary] twice) batch by batch in the unit's scratch folder; in
    memory it grew with the eval set and with the epochs recorded (78 MiB per epoch at 200 rows of SmolLM2)."""

    def __init__(self, scratch: Scratch, method: str, vocab: int) -> None:
        self.scratch, self.method, self.vocab = scratch, method, vocab
        self.batches: set[int] = set()

    def _key(self, epoch: int, batch: int) -> str:
        return f"spread-{self.method}-{epoch}-{batch}"

    def _load(self, epoch: int, batch: int, rows: int) -> metrics.RunningOrderSpread:
        """The batch's accumulator so far (a new one of ``rows`` rows before its first ordering)."""
        key = self._key(epoch, batch)
        stored = self.scratch.has(key)
        spread = metrics.RunningOrderSpread(0 if stored else rows, self.vocab)
        if stored:
            vars(spread).update(self.scratch.load(key))
        return spread

    def add(self, epoch: int, batch: int, p: torch.Tensor) -> None:
        """One ordering's distributions ``p`` [rows, V] of one batch (a batch is the same rows under every ordering)."""
        spread = self._load(epoch, batch, len(p))
        spread.add(torch.arange(len(p)), p)
        self.scratch.put(self._key(epoch, batch), vars(spread))
        self.batches.add(batch)

    def per_example(self, epoch: int) -> torch.Tensor:
        """Sen per example at ``epoch``, in example order (the batches are consecutive rows); the epoch's files go."""
        values = []
        for batch in sorted(self.batches):
            values.append(self._load(epoch, batch, 0).per_example())
            self.scratch.drop(self._key(epoch, batch))
        return torch.cat(values)


@dataclass
class UnitState:
    """What a unit gathers while it runs."""

    acc: Accumulator = field(default_factory=Accumulator)
    outputs: PassOutputs = field(default_factory=PassOutputs)
    scratch: Scratch | None = None  # the unit's scratch folder: the references' captures, and the two below
    references: list[Reference] = field(default_factory=list)
    final_captures: list[str] = field(default_factory=list)  # the FT passes whose last-epoch captures are stored
    kendall_queries: dict[tuple[str, int], list[torch.Tensor]] = field(default_factory=dict)
    grad_norms: dict[str, torch.Tensor] = field(default_factory=dict)
    train_queries: dict[str, torch.Tensor] = field(default_factory=dict)  # gd's, kept with captures "full"
    timings: dict[str, float] = field(default_factory=dict)
    update_rounding_error: dict[str, float] = field(default_factory=dict)  # per method, at its last epoch
    train_loss: dict[str, list[float]] = field(default_factory=dict)  # per method, mean step loss per epoch


try:
    _LIBC = ctypes.CDLL(None)
except OSError:  # no C library to load (not a glibc or musl system)
    _LIBC = None


def release_freed_memory() -> None:
    """Hand the memory a pass freed back to the system (glibc's malloc_trim; elsewhere nothing): glibc keeps freed
    blocks of large tensors, and the next pass's allocations do not always fit them, so without it a unit's peak
    memory creeps up from pass to pass, and more the more rows a pass has seen. Called after each pass."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


ALPHA_METHODS = ("lcgd", "gd")  # Deutch's α compares LCGD's attention change with GD's

# Above this relative error the model's dtype holds the trained weights too coarsely to trust FT's scores.
ROUNDING_WARNING = 0.01


def reference_passes(cfg: CompareConfig, lm: LoadedModel, orderings: list[Prompts], prefixes: list[Prefix],
                     state: UnitState, progress: Progress) -> None:
    """ZS and ICL per batch (captured), ICL under the other orderings (distributions only), and what depends on them
    alone: the random baselines, SimAM before FT, the ICL-vs-ICL noise floor of the output metrics, ICL's Sen."""
    prompts, acc = orderings[0], state.acc
    bar = progress.add_task("ZS / ICL passes", total=len(prompts.queries))
    for batch, indices in enumerate(batches(len(prompts.queries), cfg.batch_size)):
        kendall_rows = torch.tensor([i for i, row in enumerate(indices) if row < cfg.kendall_examples],
                                    dtype=torch.long)
        zs = score_batch(lm, prompts, indices, prefix=None, position=cfg.position)
        icl = score_batch(lm, prompts, indices, prefix=prefixes[0], position=cfg.position,
                          demo_logits=cfg.captures == "full" or len(kendall_rows) > 0)
        check_finite_logits(lm, {"ZS": zs.next_token_logprobs, "ICL": icl.next_token_logprobs})
        kendall_demo = icl.capture.demo_logits[kendall_rows].clone() if len(kendall_rows) else None
        full = cfg.captures == "full"
        state.scratch.put(f"zs-{batch}", kept(zs.capture, full))
        state.scratch.put(f"icl-{batch}", kept(icl.capture, full))
        state.references.append(Reference(batch, indices, kendall_rows, kendall_demo))
        for name, scores in (("zs", zs), ("icl", icl)):
            acc.add_masked_keys(name, scores.capture)
            state.outputs.add(name, None, scores)
        h_zs, h_icl = zs.capture.attention_output, icl.capture.attention_output
        u = metrics.uniform_per_example(cfg.seed, indices, h_icl.shape[1:], "simaou_random")
        acc.add("icl", "simaou_norm_random", metrics.simaou_random(h_icl, h_zs, u, normalised=True))
        acc.add("icl", "simaou_random", metrics.simaou_random(h_icl, h_zs, u, normalised=False))
        acc.add("icl", "simam_before", metrics.simam_before_ft(icl.capture.presoftmax_logits,
                                                               zs.capture.presoftmax_logits, zs.capture.test_length),
                icl.capture.presoftmax_logits.shape[2])
        if len(orderings) > 1:
            others = [score_batch(lm, p, indices, prefix=prefix, capture=False).next_token_logprobs
                      for p, prefix in zip(orderings[1:], prefixes[1:], strict=True)]
            logprobs = torch.stack([icl.next_token_logprobs, *others]).cpu().double()  # [orderings, B, V]
            if cfg.orderings > 1:
                acc.add_scalar("icl", "order_sensitivity",
                               metrics.order_sensitivity_per_example(logprobs[:cfg.orderings].exp()))
            if cfg.output_metrics:
                for name, metric in metrics.OUTPUT_METRICS.items():
                    acc.add_scalar("icl_vs_icl", name, metrics.order_pair_reference_per_example(metric, logprobs))
        if cfg.output_metrics:  # ICL's next-token distributions, which every FT pass's output metrics read back
            state.scratch.put(f"icl-logprobs-{batch}", icl.next_token_logprobs.float().cpu())
        progress.advance(bar, len(indices))
    progress.remove_task(bar)


# ----------------------------------------------------------------------------------------------------------
# FT methods: train, and measure at each recorded epoch


def ft_pass(cfg: CompareConfig, lm: LoadedModel, prompts: Prompts, spec: FTMethod, epoch: int, state: UnitState,
            direction: dict[str, torch.Tensor] | None,
            trained: dict[str, torch.Tensor] | None, *, final: bool, alpha: bool, keep_kendall_queries: bool,
            spread: OrderSpreads | None) -> None:
    """The FT pass of one method at one epoch (ordering 0, trained weights in the model) against the references,
    feeding its distributions to the method's order-sensitivity accumulator where there is one."""
    acc, name = state.acc, spec.name
    for ref in state.references:
        scores = score_batch(lm, prompts, ref.indices, prefix=None, position=cfg.position)
        check_finite_logits(lm, {name: scores.next_token_logprobs}, ft_epoch=epoch)
        zs, icl = state.scratch.reference(ref)
        ft, lengths = scores.capture, zs.test_length
        h_icl, h_zs, m_icl = icl.attention_output, zs.attention_output, icl.presoftmax_logits
        heads = m_icl.shape[2]
        acc.add(name, "simaou_norm", metrics.simaou_norm(h_icl, h_zs, ft.attention_output), epoch=epoch)
        acc.add(name, "simaou", metrics.simaou(h_icl, h_zs, ft.attention_output), epoch=epoch)
        acc.add(name, "simam", metrics.simam(m_icl, ft.presoftmax_logits, lengths), heads, epoch=epoch)
        acc.add(name, "simam_delta", metrics.simam_delta(m_icl, zs.presoftmax_logits, ft.presoftmax_logits, lengths,
                                                         icl_unchanged_layers=lm.family.layers_blind_to_demos),
                heads, epoch=epoch)
        state.outputs.add(name, epoch, scores)
        if cfg.output_metrics or spread is not None:
            lp_ft = scores.next_token_logprobs.cpu().double()
        if cfg.output_metrics:
            lp_icl = state.scratch.load(f"icl-logprobs-{ref.batch}").double()
            for metric_name, metric in metrics.OUTPUT_METRICS.items():
                acc.add_scalar(name, metric_name, metric(lp_icl, lp_ft), epoch=epoch)
        if spread is not None:
            spread.add(epoch, ref.batch, lp_ft.exp())
        if keep_kendall_queries and len(ref.kendall_rows):
            state.kendall_queries.setdefault((name, epoch), []).append(ft.analysis_query[ref.kendall_rows])
        if alpha and name in ALPHA_METHODS:
            state.scratch.put(f"presoftmax-{name}-{epoch}-{ref.batch}", ft.presoftmax_logits)
        if final:
            acc.add_masked_keys(name, ft, epoch)
            keep_final(cfg, state, name, ref.batch, ft)
        if direction is not None:  # the "better random" control: the same change norm, a random direction
            finetuning.swap_in(lm, direction)
            try:
                rand = score_batch(lm, prompts, ref.indices, prefix=None, position=cfg.position)
                check_finite_logits(lm, {f"{name}'s random direction": rand.next_token_logprobs}, ft_epoch=epoch)
                h_rand = rand.capture
            finally:
                finetuning.swap_in(lm, trained)
            acc.add(name, "simaou_norm_random_direction",
                    metrics.simaou_better_random(h_icl, h_zs, h_rand.attention_output, normalised=True), epoch=epoch)
            acc.add(name, "simaou_random_direction",
                    metrics.simaou_better_random(h_icl, h_zs, h_rand.attention_output, normalised=False), epoch=epoch)
            if final:
                keep_final(cfg, state, f"{name}:random_direction", ref.batch, h_rand)
    release_freed_memory()


def keep_final(cfg: CompareConfig, state: UnitState, name: str, batch: int, capture: Capture) -> None:
    """Keep a pass's last-epoch capture of one batch for the unit's stored captures (none with ``captures: none``)."""
    if cfg.captures != "none":
        if name not in state.final_captures:
            state.final_captures.append(name)
        state.scratch.put(f"final-{name}-{batch}", kept(capture, cfg.captures == "full"))


def spread_pass(lm: LoadedModel, prompts: Prompts, spread: OrderSpreads, epoch: int, batch_size: int) -> None:
    """One ordering's FT distributions into a method's order-sensitivity accumulator."""
    for batch, indices in enumerate(batches(len(prompts.queries), batch_size)):  # the reference passes' batches
        p = score_batch(lm, prompts, indices, prefix=None, capture=False).next_token_logprobs.cpu().double().exp()
        spread.add(epoch, batch, p)


def run_method(cfg: CompareConfig, lm: LoadedModel, spec: FTMethod, lr: float, orderings: list[Prompts],
               training: Prompts | None, original: dict[str, torch.Tensor], state: UnitState,
               progress: Progress, alpha: bool, lr_source: str) -> None:
    """Train one method under each ordering (on ``training``'s demos where given, else on ICL's); measure it at every
    recorded epoch (all metrics under the unit's ordering, Sen over the orderings). The model ends with its original
    weights."""
    recorded = cfg.epochs_recorded()
    prompts = orderings[0]
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    spreads = OrderSpreads(state.scratch, spec.name, vocab) if cfg.orderings > 1 else None
    # Kendall and the random direction are Dai's measurements of Dai's FT (K/V, every demo token, SGD, batch 1);
    # Kendall pairs each demo token's query, recorded in its one training step, with ICL's demo tokens.
    dai = spec.is_dai
    record_queries = dai and cfg.kendall_examples > 0 and cfg.epochs == 1 and training is None
    measuring = 0.0
    for o, ordered in enumerate([training] if training is not None else orderings[:cfg.orderings]):
        sequences = ordered.training_sequences()
        steps_per_epoch = spec.steps_per_epoch(sequences)
        bar = progress.add_task(f"finetune ({spec.name}{f', ordering {o + 1}' if cfg.orderings > 1 else ''})",
                                total=cfg.epochs * steps_per_epoch)

        def on_epoch(epoch: int, o: int = o, ordered: Prompts = ordered) -> None:
            nonlocal measuring
            if epoch not in recorded:
                return
            check_finite(spec, lm, lr, epoch, lr_source)
            mark = time.time()
            if o == 0:
                trained = direction = None
                if dai:
                    trained = finetuning.snapshot(lm)
                    direction = random_direction(lm, original, trained, cfg.seed)
                ft_pass(cfg, lm, prompts, spec, epoch, state, direction, trained,
                        final=epoch == cfg.epochs, alpha=alpha, keep_kendall_queries=record_queries,
                        spread=spreads)
            elif spreads is not None:
                spread_pass(lm, ordered, spreads, epoch, cfg.batch_size)
            measuring += time.time() - mark

        mark = time.time()
        result = finetuning.finetune(
            lm, sequences, lr, method=spec, epochs=cfg.epochs, label_lengths=ordered.training_label_lengths(),
            record_queries=record_queries and o == 0, bos_length=len(prompts.bos_ids),
            on_step=lambda bar=bar: progress.advance(bar), on_epoch=on_epoch,
        )
        progress.remove_task(bar)
        state.timings[f"{spec.name}_s"] = state.timings.get(f"{spec.name}_s", 0.0) + time.time() - mark
        if o == 0:
            # Deutch et al.'s Fig. 4 is per step of one pass over the demos: the first epoch's steps
            state.grad_norms[spec.name] = result.grad_norms[:steps_per_epoch]
            state.update_rounding_error[spec.name] = result.update_rounding_error
            state.train_loss[spec.name] = epoch_losses(result.losses, cfg.epochs)
            check_loss_fell(spec.name, state.train_loss[spec.name], lr, lr_source)
            if result.update_rounding_error > ROUNDING_WARNING:
                warn(f"{cfg.dtype} holds {spec.name}'s trained weights with a relative error of "
                     f"{result.update_rounding_error:.0%} of the update (changes below its resolution round away), "
                     f"so FT is measured on a model that is not the trained one: run in float32 (--dtype float32); "
                     "recorded as update_rounding_error")
            if result.train_queries is not None:
                kendall(cfg, state, spec.name, prompts, result, recorded)
                if cfg.captures == "full":
                    state.train_queries[spec.name] = result.train_queries
        del result  # a whole-model method's trained copies: gone before the next ordering trains
    state.timings[f"{spec.name}_measure_s"] = measuring
    state.timings[f"{spec.name}_train_s_per_epoch"] = (
        (state.timings[f"{spec.name}_s"] - measuring) / (cfg.epochs * cfg.orderings))
    for epoch in recorded if spreads is not None else []:
        state.acc.add_scalar(spec.name, "order_sensitivity", spreads.per_example(epoch), epoch=epoch)


def epoch_losses(losses: list[float], epochs: int) -> list[float]:
    """The mean training loss of each epoch's steps (every epoch takes the same number of steps)."""
    per_epoch = len(losses) // epochs
    return [round(float(np.mean(losses[e * per_epoch:(e + 1) * per_epoch])), 6) for e in range(epochs)]


def lower_lr(name: str, lr_source: str) -> str:
    """How to give ``name`` a lower learning rate, where its lr came from."""
    if lr_source == "the method's own":
        return f"give {name} a lower learning rate of its own ({name.split('@')[0]}@<lr>)"
    return "give a lower learning rate (--lr)"


def check_loss_fell(name: str, per_epoch: list[float], lr: float, lr_source: str) -> None:
    """Warn where training made its own loss worse over the epochs: the FT scores then measure a model the training
    damaged, not one that learned the demos. Each step's loss is taken before its update, so one epoch has nothing
    to compare."""
    if len(per_epoch) > 1 and per_epoch[-1] > per_epoch[0]:
        warn(f"{name}'s training loss rose from {per_epoch[0]:.4g} (epoch 1) to {per_epoch[-1]:.4g} (epoch "
             f"{len(per_epoch)}) at lr {lr:g}: FT damaged the model rather than fitting the demos; "
             f"{lower_lr(name, lr_source)}. The losses are in record.json: train_loss_per_epoch")


def check_finite(spec: FTMethod, lm: LoadedModel, lr: float, epoch: int, lr_source: str) -> None:
    """A method whose training diverged (inf or NaN in its trained weights) fails the unit: its scores would all be
    NaN, and its predictions none."""
    if not all(bool(torch.isfinite(s.parameter).all()) for s in spec.slices(lm)):
        source = "given: --lr or the config" if lr_source == "config" else lr_source
        fix = lower_lr(spec.name, lr_source)
        if lm.dtype == torch.float16:
            fix += (", or load the model in bfloat16 or float32 (--dtype): float16 overflows in some models' "
                    "activations (Gemma's)")
        raise UserError(f"{spec.name} diverged at lr {lr:g} ({source}): after epoch {epoch} its trained weights "
                        f"hold inf or NaN, so every FT score would be NaN; {fix}")


def check_finite_logits(lm: LoadedModel, logprobs: dict[str, torch.Tensor], ft_epoch: int | None = None) -> None:
    """Every pass must give finite scores, or every score of the unit would be NaN. In the ZS and ICL passes
    (``ft_epoch`` None) NaN is the model or its dtype, not the learning rate (Gemma-3's activations overflow
    float16); in an FT pass it is the training, whose weights can stay finite while the activations overflow."""
    for name, values in logprobs.items():
        if bool(torch.isfinite(values).any(dim=-1).all()):
            continue
        if ft_epoch is not None:
            raise UserError(f"{name} diverged: after epoch {ft_epoch} its pass gives NaN next-token scores (the "
                            "trained weights are finite, but too large for the activations), so every FT score "
                            "would be NaN; give a lower learning rate (--lr, or the method's own @<lr>)")
        fix = ("its activations overflow float16: load it in bfloat16 or float32 (--dtype)"
               if lm.dtype == torch.float16 else "the checkpoint or its conversion is broken: use another one")
        raise UserError(f"model {lm.name!r} gives NaN next-token scores in its {name} pass at {lm.dtype}: {fix}")


def kendall(cfg: CompareConfig, state: UnitState, name: str, prompts: Prompts, result: finetuning.FinetuneResult,
            recorded: list[int]) -> None:
    """Kendall's τ between ICL's and FT's attention to the demo tokens (Dai), with its random baseline."""
    # Kendall pairs the j-th ICL demo token with the j-th FT training token: one and the same token.
    metrics.check_same_demo_tokens(torch.tensor(prompts.prefix_ids)[prompts.demo_positions], result.train_tokens)
    for epoch in recorded:
        queries = iter(state.kendall_queries.pop((name, epoch), []))
        for ref in state.references:
            if not len(ref.kendall_rows):
                continue
            m_icl_demo = ref.kendall_demo_logits
            m_ft_demo = metrics.ft_demo_logits(next(queries), result.train_queries)
            u_demo = metrics.uniform_per_example(cfg.seed, [ref.indices[int(r)] for r in ref.kendall_rows],
                                                 m_icl_demo.shape[1:], "kendall_random")
            state.acc.add(name, "kendall", metrics.kendall(m_icl_demo, m_ft_demo), epoch=epoch)
            state.acc.add(name, "kendall_random", metrics.kendall_random(m_icl_demo, u_demo), epoch=epoch)
    release_freed_memory()


def alpha_rows(state: UnitState, recorded: list[int]) -> None:
    """Deutch et al.'s α between LCGD's and GD's attention maps, at each recorded epoch."""
    for epoch in recorded:
        for ref in state.references:
            keys = [f"presoftmax-{name}-{epoch}-{ref.batch}" for name in ALPHA_METHODS]
            m_lcgd, m_gd = (state.scratch.load(key) for key in keys)
            for key in keys:
                state.scratch.drop(key)
            zs = state.scratch.capture(f"zs-{ref.batch}")
            state.acc.add("lcgd_vs_gd", "alpha", metrics.alpha(m_lcgd, m_gd, zs.presoftmax_logits, zs.test_length),
                          m_gd.shape[2], epoch=epoch)


# ----------------------------------------------------------------------------------------------------------
# The unit


def demo_orders(cfg: CompareConfig, true_k: int) -> list[np.ndarray]:
    """The unit's demo order, then distinct others (orders order+1, order+2, ... with repeats skipped): ``orderings``
    in all, and at least two when the output metrics need their ICL-vs-ICL noise floor. The second ordering added
    for that floor alone is the first of those that ends with another demo (an LM reads its last demo most: two
    orderings ending alike would make a floor of near-identical readings). Each is a permutation of the sampled
    order."""
    count, floor_only = cfg.orderings, False
    if cfg.output_metrics and count < 2:
        if true_k >= 2:
            count, floor_only = 2, True
        else:
            warn("one demonstration has one order: the output metrics' ICL-vs-ICL noise floor is not computed")
    check_orderings(count, true_k)
    orders, seen, order = [], set(), cfg.order
    while len(orders) < count:
        permutation = order_permutation(cfg.seed, order, true_k)
        # the floor's own ordering ends with another demo (with 2+ demos one does long before the 100th try)
        other_end = not (floor_only and orders) or int(permutation[-1]) != int(orders[0][-1]) or order > cfg.order + 99
        if tuple(permutation) not in seen and other_end:
            seen.add(tuple(permutation))
            orders.append(permutation)
        order += 1
    if cfg.output_metrics and len(orders) >= 2 and len({int(o[-1]) for o in orders}) == 1:
        warn_once(("floor orderings",),  # said once for a sweep's units
                  f"the {len(orders)} demo orderings of the output metrics' ICL-vs-ICL noise floor all end with the "
                  "same demo: an LM reads its last demo most, so the floor compares near-identical readings (KL and "
                  "JS near 0, TO@10 and OCS@10 near 1) and may flag every FT method; use --orderings 3 or more")
    return orders


def record_kendall(cfg: CompareConfig, methods: dict[str, FTMethod]) -> bool:
    """Whether the unit measures Kendall τ, when it was asked for (kendall_examples > 0)."""
    wanted = cfg.kendall_examples > 0 and any(spec.is_dai for spec in methods.values())
    return not wanted or (cfg.epochs == 1 and cfg.ft_shots is None)


def ordered_prompts(prompts: Prompts, orders: list[np.ndarray]) -> list[Prompts]:
    """The unit's prompts (in orders[0]) and the same demos in each other order."""
    sampled = prompts.reordered(np.argsort(orders[0]))  # back to the sampled order
    return [prompts] + [sampled.reordered(order) for order in orders[1:]]


def peak_memory_mb(device: torch.device) -> float:
    """The peak CUDA allocation since the unit started, or on CPU the process's peak resident memory (in a sweep that
    runs several units in one process: the largest so far), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_compare(cfg: CompareConfig, *, show_progress: bool = True) -> UnitResult:
    """Run one unit and return its records; nothing is written here (the store writes them atomically)."""
    started = time.time()
    transformers.utils.logging.disable_progress_bar()
    rows = select_rows(cfg)
    lm = load_model(cfg.model, dtype=cfg.dtype, untrained=cfg.untrained, seed=cfg.seed, device=cfg.device)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    unit = prepare_unit(cfg, lm, rows)
    prompts = unit.prompts
    methods = {name: finetuning.parse_method(name) for name in cfg.methods}
    if not record_kendall(cfg, methods):
        why = "it is measured for Dai's gd over one epoch on ICL's own demos"
    elif cfg.kendall_examples == 0 and any(spec.is_dai for spec in methods.values()):
        why = "kendall_examples is 0 (give it the eval rows to measure it on, e.g. 100)"
    else:
        why = None
    if why is not None:
        warn_once(("no kendall", why), f"no Kendall τ in this unit: {why}")
    specs = list(methods.values())
    for index, spec in enumerate(specs):  # a layer out of range fails before any pass; two on one layer are said
        spec.check_layers(specs[index + 1:], len(blocks(lm.model, lm.family)))
    orders = demo_orders(cfg, prompts.true_k)
    orderings = ordered_prompts(prompts, orders)
    recorded = cfg.epochs_recorded()
    alpha = all(name in methods for name in ALPHA_METHODS)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=not show_progress, transient=True)
    with progress, tempfile.TemporaryDirectory(prefix="iclgd-unit-") as scratch:
        state = UnitState(scratch=Scratch(Path(scratch)))
        original = finetuning.snapshot(lm)
        mark = time.time()
        needs_unit_lr = any(spec.lr is None for spec in methods.values())
        lr, lr_source, search = (choose_lr(cfg, lm, unit.task.name, unit, progress) if needs_unit_lr
                                 else (None, "per method", None))
        state.timings["lr_s"] = time.time() - mark
        if search is not None:
            log_line(progress, f"lr search: lr {lr:g}, {state.timings['lr_s']:.0f} s")
        release_freed_memory()

        mark = time.time()
        prefixes = [encode_prefix(lm, torch.tensor(p.prefix_ids, dtype=torch.long)) for p in orderings]
        reference_passes(cfg, lm, orderings, prefixes, state, progress)
        del prefixes
        release_freed_memory()
        state.timings["reference_passes_s"] = time.time() - mark
        log_line(progress, f"ZS / ICL passes: {len(prompts.queries)} eval rows, "
                            f"{state.timings['reference_passes_s']:.0f} s")
        for spec in methods.values():
            run_method(cfg, lm, spec, spec.lr or lr, orderings, unit.training, original, state, progress,
                       alpha, "the method's own" if spec.lr else lr_source)
            release_freed_memory()
            log_line(progress, f"{spec.name}: trained and measured, {state.timings[f'{spec.name}_s']:.0f} s")
        if alpha:
            alpha_rows(state, recorded)
        captures = []
        if cfg.captures != "none":
            for ref in state.references:
                zs, icl = state.scratch.reference(ref)
                passes = {"zs": zs, "icl": icl,
                          **{name: state.scratch.capture(f"final-{name}-{ref.batch}") for name in state.final_captures}}
                captures.append(compact_captures(ref.indices, passes, full=cfg.captures == "full"))
            for name, queries in state.train_queries.items():
                captures.append({f"{name}.blocks.{layer}.train_q": q for layer, q in enumerate(queries)})

    keys = unit_keys(cfg, unit.info)
    accuracy_rows, predictions = accuracy_and_predictions(prompts, state.outputs, list(methods), cfg.epochs, keys)
    table = accuracy_rows + state.acc.rows(keys) + grad_norm_rows(state.grad_norms, keys)
    record = {
        "config": cfg.model_dump(),
        "versions": library_versions(),
        "mkl_cbwr": MKL_MODE,  # strict mode: the same bits whatever the batch size
        "analysis_position": cfg.position,
        "dtype": cfg.dtype,
        "model": {"name": cfg.model, "family": lm.family.name, "revision": lm.source_revision,
                  "untrained": cfg.untrained, "provenance": lm.provenance, "files": model_files(cfg.model),
                  "sha256": model_sha256(cfg.model)},
        "lr": lr,
        "lr_source": lr_source,
        "lr_search": None if search is None else {  # each grid point's held-out accuracy, over how many rows
            "scores": {repr(k): v for k, v in search.scores.items()},
            "rows": {repr(k): v for k, v in search.rows.items()} if search.rows else None},
        "methods": {name: {**vars(spec), "lr": spec.lr or lr} for name, spec in methods.items()},
        "epochs_recorded": recorded,
        "update_rounding_error": state.update_rounding_error,
        "train_loss_per_epoch": state.train_loss,
        "orderings": [[int(i) for i in order] for order in orders],
        **unit.info,
        "timings": {**{k: round(v, 3) for k, v in state.timings.items()}, "total_s": round(time.time() - started, 3)},
        "peak_memory_mb": round(peak_memory_mb(next(lm.model.parameters()).device), 1),
    }
    return UnitResult(metrics=table, predictions=predictions, record=record, example_scores=state.acc.example_rows(),
                      captures=captures, captures_dtype=None)


def unit_keys(cfg: CompareConfig, info: dict) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "variant": f"untrained:{cfg.untrained}" if cfg.untrained else "trained",
        "task": info["task"],
        "template": template_key(cfg.template),
        "seed": cfg.seed,
        "order": cfg.order,
        "k": cfg.shots,
        "true_k": info["true_k"],
    }
