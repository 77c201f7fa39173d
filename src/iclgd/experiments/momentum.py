"""`iclgd momentum`: vanilla vs momentum attention (Dai et al. 2023, §5, Tables 6-7) at iclgd's scale.

For each pretraining seed, one iclgd pretraining run per attention with the same corpus, shape and budget
(``<out>/runs/<variant>-s<seed>``, resumable: a rerun reuses finished runs), then on each final model:

    perplexity     on held-out corpus sequences at each context length (the same sequences for every run; the
                   targets the corpus trains on), with its 95% bootstrap interval over the sequences
    ICL accuracy   at each k on the corpus's held-out task (icc: icc-heldout), through icl-curve's pipeline, per demo
                   seed
    onset          the first logged step whose ICL probe (k = 16 on the held-out mapping) reaches ONSET

and, momentum minus vanilla, paired within each pretraining seed (per sequence on log-perplexity, per demo seed on
accuracy), each with a two-stage 95% bootstrap interval (pretraining seeds, then sequences or demo seeds within
each: it carries the spread between runs). Dai et al. report, for two 350M LMs, perplexity
15.14 -> 15.02 at length 1024 and ICL accuracy 51.9 -> 54.7 (spec/protocols.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iclgd.checks import check_output_dir
from iclgd.errors import UserError
from iclgd.experiments.icl_curve import DEFAULT_KS
from iclgd.metrics import bootstrap_ci, cluster_bootstrap_ci

ONSET = 0.9  # ICL probe accuracy that marks the onset
LENGTHS = (16, 32, 64)  # context lengths of the perplexity (the icc recipe's n_positions is 64)
RESULTS_FILE = "momentum.parquet"
HELD_OUT_STREAM = 2**32 - 1  # first entry of the held-out sequences' seed (training batches use [seed, step])


@dataclass(frozen=True)
class Variant:
    """One attention: ``label`` names its runs (vanilla, momentum-eta0.9, momentum-learned0.9)."""

    attention: str
    eta: float = 0.0
    learned: bool = False

    @property
    def label(self) -> str:
        if self.attention == "vanilla":
            return "vanilla"
        return f"momentum-{'learned' if self.learned else 'eta'}{self.eta:g}"

    def fields(self) -> dict[str, Any]:
        if self.attention == "vanilla":
            return {}
        return {"attention": "momentum", "momentum_eta": self.eta, "momentum_learned": self.learned}


def parse_variant(text: str) -> Variant:
    """A momentum variant from the command line: ``η`` (fixed) or ``learned:η``."""
    learned = text.startswith("learned:")
    try:
        eta = float(text.removeprefix("learned:"))
    except ValueError:
        eta = math.nan
    if not 0.0 <= eta < 1.0 or (learned and eta == 0.0):
        raise UserError(f"--momentum {text!r}: give η in [0, 1) for a fixed decay, or learned:η with η in (0, 1) "
                        "(e.g. --momentum 0.9 --momentum learned:0.9)")
    return Variant("momentum", eta, learned)


def run_configs(corpus: str, seeds: Sequence[int], steps: int | None, variants: Sequence[Variant], out: Path,
                overrides: dict[str, Any] | None = None) -> dict[tuple[str, int], tuple[Any, Path]]:
    """(variant label, seed) -> (PretrainConfig, run folder): the same recipe, seed and budget per variant."""
    from iclgd.synthetic.pretrain.config import load_config

    return {(v.label, seed): (load_config(None, corpus=corpus, seed=seed, steps=steps, **(overrides or {}),
                                          **v.fields()), out / "runs" / f"{v.label}-s{seed}")
            for seed in seeds for v in variants}


@torch.no_grad()
def sequence_nll(model_dir: Path, config: Any, lengths: Sequence[int], n_sequences: int,
                 batch_size: int = 64) -> dict[int, torch.Tensor]:
    """length -> mean next-token NLL of each held-out sequence of that many tokens over the targets the corpus trains
    on, [n_sequences] (float64). The sequences depend on (length, n_sequences) only, not on the run."""
    import transformers
    from transformers import AutoModelForCausalLM

    import iclgd.models.momentum  # noqa: F401  (the momentum class, registered with the Auto classes)
    from iclgd.synthetic.pretrain.corpora import make_corpus
    from iclgd.synthetic.pretrain.train import loss_mask

    corpus = make_corpus(config.corpus, config.corpus_options)
    transformers.utils.logging.disable_progress_bar()  # iclgd shows its own progress
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    per_length = {}
    for length in lengths:
        ids = torch.from_numpy(corpus.pretraining_batch(np.random.default_rng([HELD_OUT_STREAM, length]),
                                                        n_sequences, length))
        mask = loss_mask(corpus, config, length)
        out = []
        for start in range(0, n_sequences, batch_size):
            batch = ids[start:start + batch_size]
            logits = model(batch).logits[:, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            out.append(nll[:, mask].mean(1) if mask is not None else nll.mean(1))
        per_length[length] = torch.cat(out)
    return per_length


def _row(variant: str, seed: int | None, measure: str, at: int | None, value: float,
         ci: tuple[float, float] | None, count: int, demo_seed: int | None = None) -> dict[str, Any]:
    """One result row: ``at`` is the context length (perplexity) or k (accuracy); ``seed`` the pretraining seed."""
    low, high = ci if ci is not None else (None, None)
    return {"variant": variant, "seed": seed, "demo_seed": demo_seed, "measure": measure, "at": at, "value": value,
            "ci_low": low, "ci_high": high, "count": count}


def _interval(values: torch.Tensor, seed: int, stream: str) -> tuple[float, float, float]:
    """The mean of ``values`` and its 95% bootstrap interval."""
    low, high = bootstrap_ci(values.double(), seed, stream)
    return float(values.double().mean()), float(low), float(high)


def check_task_words(recipe: Any, task: Any) -> None:
    """UserError where the runs' tokenizer (the corpus's words) cannot encode the task's label words."""
    from iclgd.prompts.sequences import PieceTokenizer, check_label_ids
    from iclgd.synthetic.pretrain.corpora import make_corpus
    from iclgd.synthetic.pretrain.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(make_corpus(recipe.corpus, recipe.corpus_options).words)
    words, pieces = list(task.label_words.values()), PieceTokenizer(tokenizer)
    try:
        check_label_ids(tokenizer, words, [pieces(word) for word in words], single_token=False)
    except UserError as error:
        raise UserError(f"task {task.name!r} does not fit corpus {recipe.corpus!r}: {error}; use the corpus's own "
                        "task (the default)") from None


def compare_momentum(out: str | Path, *, corpus: str = "icc", seeds: Sequence[int] = (0, 1, 2),
                     steps: int | None = None, variants: Sequence[Variant] = (Variant("vanilla"),
                                                                             Variant("momentum", 0.9)),
                     task: str | None = None, lengths: Sequence[int] = LENGTHS,
                     ks: Sequence[int] = DEFAULT_KS,
                     demo_seeds: int = 5, eval_size: int | None = None, n_sequences: int = 512,
                     overrides: dict[str, Any] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Pretrain (or reuse) every run, measure it; return the rows (also written to ``<out>/momentum.parquet``).
    ``task`` None: the corpus's held-out task."""
    from iclgd.experiments.icl_curve import icl_curve
    from iclgd.runner.store import library_versions
    from iclgd.runs import write_parquet
    from iclgd.synthetic.pretrain.corpora import heldout_task
    from iclgd.synthetic.pretrain.train import check_out, onset_step, pretrain

    out = check_output_dir(out)
    variants = list({v.label: v for v in variants}.values())  # one of each, in order (0.9 and 0.90 are one)
    seeds, lengths, ks = list(dict.fromkeys(seeds)), list(dict.fromkeys(lengths)), list(dict.fromkeys(ks))
    if not seeds or not variants or not lengths or not ks:
        raise UserError("give at least one seed, variant, context length and k")
    configs = run_configs(corpus, seeds, steps, variants, out, overrides)  # every setting checked before training
    recipe = next(iter(configs.values()))[0]  # every run's shape and corpus
    n_positions = recipe.n_positions
    if max(lengths) > n_positions or min(lengths) < 2:
        raise UserError(f"context lengths {list(lengths)} must lie in 2..{n_positions} (the model's n_positions)")
    from iclgd.tasks import load_splits, load_task, sample_demo_indices

    task = task or heldout_task(corpus, recipe.corpus_options)
    if min(ks) < 0 or demo_seeds < 1:
        raise UserError(f"k values {list(ks)} must be >= 0 (0 is zero-shot), with at least one demo seed")
    task_file = load_task(task)  # an unknown task fails here
    labels = [example.label for example in load_splits(task_file).pool]
    check_task_words(recipe, task_file)  # a task the corpus's vocabulary cannot say: before any training
    sample_demo_indices(labels, max(max(ks), 1), 0)  # more demos than the pool holds: before any training
    for config, run_dir in configs.values():  # a run folder of another config is refused before any training
        check_out(run_dir, config)
    for config, run_dir in configs.values():
        pretrain(config, run_dir, progress=progress)

    rows: list[dict[str, Any]] = []
    nll: dict[tuple[str, int, int], torch.Tensor] = {}
    accuracy: dict[tuple[str, int, int, int], float] = {}
    for (label, seed), (config, run_dir) in configs.items():
        for length, values in sequence_nll(run_dir, config, lengths, n_sequences).items():
            nll[(label, seed, length)] = values
            mean, low, high = _interval(values, seed, f"momentum/{label}/nll/{length}")
            rows.append(_row(label, seed, "perplexity", length, float(np.exp(mean)),
                             (float(np.exp(low)), float(np.exp(high))), values.numel()))
        for point in icl_curve(str(run_dir), task, ks=ks, seeds=range(demo_seeds), eval_size=eval_size):
            accuracy[(label, seed, point.k, point.seed)] = point.accuracy
            rows.append(_row(label, seed, "icl_accuracy", point.k, point.accuracy, None, point.n_eval,
                             demo_seed=point.seed))
        onset = onset_step(run_dir, ONSET)
        rows.append(_row(label, seed, "onset_step", None, float("nan") if onset is None else float(onset), None, 1))
    # Momentum minus vanilla per pretraining seed (per sequence, or per demo seed), then a two-stage bootstrap:
    # seeds, then the sequences (demo seeds) within each, so the interval carries the spread between runs.
    base = variants[0].label
    for variant in variants[1:]:
        label = variant.label
        for length in lengths:
            groups = [nll[(label, s, length)] - nll[(base, s, length)] for s in seeds]
            mean, low, high = cluster_bootstrap_ci(groups, seeds[0], f"momentum/{label}-{base}/nll/{length}")
            rows.append(_row(f"{label} − {base}", None, "log_perplexity_difference", length, mean, (low, high),
                             sum(g.numel() for g in groups)))
        for k in ks:
            groups = [torch.tensor([accuracy[(label, s, k, d)] - accuracy[(base, s, k, d)] for d in range(demo_seeds)])
                      for s in seeds]
            mean, low, high = cluster_bootstrap_ci(groups, seeds[0], f"momentum/{label}-{base}/accuracy/{k}")
            rows.append(_row(f"{label} − {base}", None, "icl_accuracy_difference", k, mean, (low, high),
                             sum(g.numel() for g in groups)))
    settings = {"corpus": corpus, "seeds": list(seeds), "steps": steps, "variants": [v.label for v in variants],
                "task": task, "lengths": list(lengths), "ks": list(ks), "demo_seeds": demo_seeds,
                "eval_size": eval_size, "n_sequences": n_sequences, "overrides": overrides or {}}
    write_parquet(rows, out / RESULTS_FILE, {"settings": settings, "versions": library_versions(),
                                             "runs": {f"{label}-s{seed}": str(run_dir) for (label, seed), (_, run_dir)
                                                      in configs.items()}})
    return rows
