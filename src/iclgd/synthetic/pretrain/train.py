"""Pretraining a small GPT-2 on a synthetic corpus, resumable and bit-reproducible on CPU.

The run folder ``out`` holds, while training:
    pretrain.yaml      the config (marks the folder as an iclgd pretrain run; a rerun must match it)
    environment.json   library versions and the CPU it started on: the float sums, hence the weights, depend on
                       them too (a resume elsewhere is warned of)
    checkpoint.pt      model + optimizer + RNG states + step, replaced atomically every checkpoint_every steps
    log.csv            step, loss, lr, seconds, icl_accuracy (corpora with held-out mappings: ICL accuracy
                       at k = probe_k on the first one, so the sudden onset of ICL shows in the log), and the
                       induction circuit's progress measures on the same prompts (circuit_measures)
    checkpoints/       with ``keep_every``: step-NNNNNN/ every keep_every steps, at step 0 and at the last step,
                       each a loadable model folder (model + tokenizer, written atomically), for analyses over
                       training (``iclgd weights checkpoints``); not used to resume
and at the end the Hugging Face model and tokenizer (``save_pretrained``), loadable like any hub model.
Killed and rerun, training continues from the last checkpoint and ends with the same weights as an
uninterrupted run: the batch of step s is a pure function of (seed, s) and the lr a pure function of s.
The float sums depend on the number of CPU threads, so a run resumes only at the thread count it was started
with (another is refused: the weights would silently differ from an uninterrupted run's).

The final save writes model and tokenizer into ``.final.tmp/`` and then moves each file into the run folder;
the run is complete only when every file of FINAL_FILES and the checkpoint are there. Killed during the save,
the rerun finds the last checkpoint at the last step and saves again.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from iclgd.checks import check_device, check_output_dir
from iclgd.config_files import differences
from iclgd.errors import UserError, warn
from iclgd.runs import atomic_file, atomic_folder, plain_modes
from iclgd.synthetic.pretrain.config import PretrainConfig
from iclgd.synthetic.pretrain.corpora import Corpus, make_corpus
from iclgd.synthetic.pretrain.tokenizer import BOS_ID, build_tokenizer, vocabulary

CONFIG_FILE = "pretrain.yaml"
ENVIRONMENT_FILE = "environment.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.csv"
FINAL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json")
FINAL_STAGING = ".final.tmp"
KEPT_DIR = "checkpoints"
PROBE_K, PROBE_PROMPTS = 16, 256


@dataclass
class PretrainResult:
    out: Path
    steps: int  # steps trained by this call (0 when the run was already complete)
    seconds: float
    final_loss: float
    saved: bool = True  # this call wrote the final model (False: it was there already)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.inf


def sinusoids(n_positions: int, width: int) -> torch.Tensor:
    """P[p, 2i] = sin(p / 10000^(2i/width)), P[p, 2i+1] = cos(p / 10000^(2i/width)) (Vaswani et al.)."""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    frequency = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    table = torch.zeros(n_positions, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.float()


def build_model(config: PretrainConfig, corpus: Corpus):
    """A fresh GPT2LMHeadModel (or, with ``attention: momentum``, iclgd's momentum-attention GPT-2) under
    ``config.seed`` (dropout off; sinusoidal initial positions if asked)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from iclgd.models.momentum import MomentumGPT2Config, MomentumGPT2LMHeadModel

    n_tokens = len(vocabulary(corpus.words))
    vocab_size = config.vocab_size or n_tokens
    if vocab_size < n_tokens:
        raise UserError(f"vocab_size {vocab_size} is too small for corpus {config.corpus!r}, which has {n_tokens} "
                        f"tokens; set vocab_size >= {n_tokens} or leave it out")
    shape = dict(
        vocab_size=vocab_size, n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, n_inner=config.n_inner, activation_function=config.activation,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=BOS_ID, eos_token_id=BOS_ID,
        tie_word_embeddings=config.tie_embeddings, initializer_range=config.init_std,
    )
    torch.manual_seed(config.seed)
    if config.attention == "momentum":
        model = MomentumGPT2LMHeadModel(MomentumGPT2Config(momentum_eta=config.momentum_eta,
                                                           momentum_learned=config.momentum_learned, **shape))
    else:
        model = GPT2LMHeadModel(GPT2Config(**shape))
    if config.position_init == "sinusoidal":
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(config.position_scale * sinusoids(config.n_positions, config.n_embd))
    return model


def loss_mask(corpus: Corpus, config: PretrainConfig, length: int) -> torch.Tensor | None:
    """Boolean mask over the length - 1 next-token targets (None: every target)."""
    if config.loss_on == "all" or not hasattr(corpus, "loss_positions"):
        return None  # corpora without unpredictable tokens (GINC, Markov chains) train on every target
    mask = torch.zeros(length - 1, dtype=torch.bool)
    mask[torch.as_tensor(corpus.loss_positions(length))] = True
    return mask


def batch_ids(corpus: Corpus, config: PretrainConfig, step: int) -> torch.Tensor:
    """The token batch of step ``step``: a pure function of (seed, step)."""
    rng = np.random.default_rng([config.seed, step])
    return torch.from_numpy(corpus.pretraining_batch(rng, config.batch_size, config.train_len))


def next_token_loss(model, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy of ids[:, t+1] given ids[:, :t+1], over the targets in ``mask``."""
    logits = model(ids).logits[:, :-1]
    targets = ids[:, 1:]
    if mask is not None:
        logits, targets = logits[:, mask], targets[:, mask]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def environment() -> dict[str, str]:
    """What a run's weights depend on besides its config: the library versions and the CPU, whose instruction set
    picks torch's kernels (another CPU type sums the same floats in another order)."""
    from iclgd.runner.store import library_versions

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {**library_versions(), "cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def check_environment(out: Path, config: PretrainConfig) -> None:
    """Record the environment of a new run; warn when a run is resumed in another one (its weights can then differ
    from an uninterrupted run's)."""
    path = out / ENVIRONMENT_FILE
    now = environment()
    if not path.is_file():
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(now, indent=2) + "\n", encoding="utf-8")
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    changed = sorted(key for key in now if key != "iclgd" and recorded.get(key) != now[key])
    if changed and config.device == "cpu":
        warn(f"{out} was started with other {', '.join(changed)} ({path}): the resumed weights can differ from an "
             "uninterrupted run's")


def run_folder(out: Path) -> Path:
    """The run folder of ``out``, which may be the run's checkpoints/ folder."""
    out = Path(out)
    return out.parent if out.name == KEPT_DIR and not (out / CONFIG_FILE).is_file() else out


def read_log(out: Path) -> list[dict[str, str]]:
    """The rows of a run's log.csv (``out`` may be its checkpoints/ folder); [] without one."""
    path = run_folder(out) / LOG_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        for row in rows:
            int(row["step"])
            [float(value) for key, value in row.items() if key != "step" and value]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is damaged (a row without a step, or a value that is not a number): restore it, "
                        "or delete it and rerun (the log then starts after the last checkpoint)") from None
    return rows


def onset_step(out: Path, threshold: float = 0.9) -> int | None:
    """The first logged step of a run whose ICL probe reaches ``threshold`` (None: never, no probe, or no log)."""
    for row in read_log(out):
        if row.get("icl_accuracy") and float(row["icl_accuracy"]) >= threshold:
            return int(row["step"])
    return None


def circuit_log(out: Path) -> dict[str, dict[int, float]]:
    """The induction circuit's progress measures a run logged: measure -> {step: value} (only those logged)."""
    rows = read_log(out)
    logged = {name: {int(row["step"]): float(row[name]) for row in rows if row.get(name)} for name in PROBE_COLUMNS[1:]}
    return {name: values for name, values in logged.items() if values}


def run_heldout_task(out: Path) -> str:
    """The held-out task of the corpus a run was trained on (its pretrain.yaml; ``out`` may be the run's
    checkpoints/ folder); UserError without one."""
    from iclgd.synthetic.pretrain.corpora import heldout_task

    path = run_folder(out) / CONFIG_FILE
    recorded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if not isinstance(recorded, dict) or "corpus" not in recorded:
        raise UserError(f"{out} is not an iclgd pretrain run (no {CONFIG_FILE} naming its corpus): give --task")
    return heldout_task(recorded["corpus"], recorded.get("corpus_options"))


def probe_k(config: PretrainConfig) -> int:
    """Demonstrations in the ICL probe: PROBE_K, fewer where the context is too short for them."""
    return min(PROBE_K, (config.n_positions - 2) // 3)


PROBE_COLUMNS = ("icl_accuracy", "previous_token_score", "label_attention", "induction_score", "induction_share")
LOG_COLUMNS = ("step", "loss", "lr", "seconds", *PROBE_COLUMNS)


@torch.no_grad()
def icl_probe(model, corpus: Corpus, config: PretrainConfig) -> dict[str, float | None] | None:
    """On PROBE_PROMPTS prompts of the corpus's first held-out mapping at k = probe_k (None: the corpus has none):
    the ICL accuracy, and the induction circuit's progress measures (:func:`circuit_measures`). Its own seeded rng
    and no dropout: the training run is not disturbed."""
    k = probe_k(config)
    if not hasattr(corpus, "heldout_prompts") or not corpus.heldout or k < 1:
        return None
    ids, gold, candidates = corpus.heldout_prompts(np.random.default_rng([config.seed, 1 << 20]), k, PROBE_PROMPTS)
    device = next(model.parameters()).device
    tokens = torch.from_numpy(ids).to(device)
    model.eval()
    # the accuracy from the model's own attention kernel (as every log before the circuit measures had it), the
    # attention probabilities from a second, eager pass: the fused kernels return none
    logits = model(tokens).logits[:, -1, torch.from_numpy(candidates).to(device)]
    attention = attention_probabilities(model, tokens)
    model.train()
    predicted = candidates[logits.argmax(-1).cpu().numpy()]
    return {"icl_accuracy": float((predicted == gold).mean()), **circuit_measures(attention, ids, corpus)}


def attention_probabilities(model, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each layer's attention probabilities (batch, heads, T, T), by transformers' eager attention (the fused
    kernels return none); the model's own implementation is restored after."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        return tuple(model(tokens, output_attentions=True).attentions)
    finally:
        model.set_attn_implementation(implementation)


def circuit_measures(attention: tuple[torch.Tensor, ...], ids: np.ndarray, corpus) -> dict[str, float | None]:
    """The induction circuit's progress measures on ICL prompts [BOS] (x y SEP)*k x_q (``iclgd.metrics.circuits``),
    the first three each the largest over heads: ``previous_token_score`` in the layers before the last (attention
    from each demo label to its input), ``label_attention`` and ``induction_score`` in the layers after the first
    (the query's attention on all demo labels; on the labels whose input is the query's latent input, chance being
    label_attention times their share of the labels); and ``induction_share``, for the head of that largest
    induction score, the share of its label attention on those labels: ~1 for an induction head, about the labels'
    share (~1/6 on the held-out mapping) where no head matches the query's input, less where heads avoid it (0
    where no head attends to the labels). None in a one-layer model, which has no circuit of two."""
    from iclgd.metrics.circuits import attention_mass, previous_token_score

    if len(attention) < 2:
        return dict.fromkeys(PROBE_COLUMNS[1:])
    labels = corpus.label_positions(ids.shape[1]) + 1  # label_positions are targets: the label token is next
    latent = corpus.latent_input(ids)
    all_labels = np.zeros(ids.shape, dtype=bool)
    all_labels[:, labels] = True
    matching = np.zeros(ids.shape, dtype=bool)
    matching[:, labels] = latent[:, labels - 1] == latent[:, -1:]
    all_labels, matching = torch.from_numpy(all_labels), torch.from_numpy(matching)
    label_mass = torch.cat([attention_mass(a, -1, all_labels) for a in attention[1:]])  # every head of those layers
    matching_mass = torch.cat([attention_mass(a, -1, matching) for a in attention[1:]])
    top = int(matching_mass.argmax())
    return {
        "previous_token_score": max(float(previous_token_score(a, labels).max()) for a in attention[:-1]),
        "label_attention": float(label_mass.max()),
        "induction_score": float(matching_mass[top]),
        "induction_share": float(matching_mass[top] / label_mass[top]) if label_mass[top] > 0 else 0.0,
    }


def check_out(out: Path, config: PretrainConfig) -> bool:
    """Whether ``out`` holds this run already (True: resume or done); UserError if it holds something else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"output {out} is a file, not a folder; give a new or empty folder")
    marker = out / CONFIG_FILE
    if not marker.is_file():
        if any(out.iterdir()):
            raise UserError(f"output folder {out} is not empty and is not an iclgd pretrain run (no {CONFIG_FILE}); "
                            "give a new or empty folder")
        return False
    try:
        recorded = yaml.safe_load(marker.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        recorded = None
    if not isinstance(recorded, dict):
        raise UserError(f"{marker} is not a pretrain config; give a new or empty output folder")
    try:
        there = PretrainConfig(**recorded).identity()
    except Exception:  # a config of another version: not this run
        there = None
    if there != config.identity():
        differ = differences(there, config.identity()) if there is not None else ""
        raise UserError(f"output folder {out} holds a pretrain run with another config ({differ or marker}); give a "
                        "new folder or the same config to resume it")
    return True


def check_threads(out: Path, config: PretrainConfig) -> None:
    """A run is resumed at the thread count it was started with: the float sums, hence the weights, depend on it."""
    recorded = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8")).get("threads")
    if recorded != config.threads:
        raise UserError(f"{out} was trained with threads={recorded} and its weights are bit-reproducible only at "
                        f"that thread count: resume with --threads {recorded} (asked: {config.threads}), or start "
                        "a new folder")


def _atomic_save(obj: object, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(out: Path, step: int, model, optimizer) -> None:
    _atomic_save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()}, out / CHECKPOINT_FILE)


def load_checkpoint(out: Path, model, optimizer) -> int:
    """Restore the last checkpoint of ``out`` into model and optimizer; returns its step (0 if none)."""
    path = out / CHECKPOINT_FILE
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    return int(state["step"])


def kept_folder(out: Path, step: int) -> Path:
    """Where the kept checkpoint of ``step`` goes: ``<out>/checkpoints/step-NNNNNN``."""
    return out / KEPT_DIR / f"step-{step:06d}"


def save_kept(out: Path, step: int, model, tokenizer) -> Path:
    """The model at ``step`` as a loadable folder, written atomically. A resumed run recomputes the steps after its
    last checkpoint bit for bit, so a folder it writes again replaces an identical one."""
    with atomic_folder(kept_folder(out, step), replace=True) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return kept_folder(out, step)


def is_complete(out: Path) -> bool:
    """Every file of the finished run is there: model, tokenizer and the last checkpoint."""
    return all((out / name).is_file() for name in (*FINAL_FILES, CHECKPOINT_FILE))


def save_final(out: Path, model, tokenizer) -> None:
    """Model and tokenizer into ``<out>/.final.tmp``, then each file moved into ``out`` (one rename each).

    Interrupted anywhere, the run stays incomplete (:func:`is_complete` checks every file) and the rerun saves
    again from the last checkpoint; no mix of an old and a new file can pass for a finished run.
    """
    import shutil

    staging = out / FINAL_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    plain_modes(staging)
    missing = [name for name in FINAL_FILES if not (staging / name).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained did not write {missing} in {staging}")
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)
    staging.rmdir()


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def _log_rows(out: Path, rows: list[tuple], step_from: int) -> None:
    """Append log rows, dropping rows past ``step_from`` left by a killed run (they are recomputed)."""
    kept = [row for row in read_log(out) if int(row["step"]) <= step_from]
    with (out / LOG_FILE).open("w", newline="") as f:
        # restval: a log from before the circuit measures has no such columns, its rows get them empty
        earlier = csv.DictWriter(f, LOG_COLUMNS, restval="")
        earlier.writeheader()
        earlier.writerows(kept)
        csv.writer(f).writerows(rows)


def pretrain(config: PretrainConfig, out: str | Path, *, progress: bool = True,
             stop_after: int | None = None) -> PretrainResult:
    """Pretrain (or resume) the run in ``out``; ``stop_after`` ends this call after that many steps (tests)."""
    out = Path(out)
    corpus = make_corpus(config.corpus, config.corpus_options)
    resuming = check_out(out, config)
    check_output_dir(out)
    device = torch.device(check_device(config.device))
    if resuming and (out / CHECKPOINT_FILE).is_file() and not is_complete(out):
        check_threads(out, config)
    model = build_model(config, corpus)  # also validates the sizes before anything is written
    mask = loss_mask(corpus, config, config.train_len)
    if config.threads:
        torch.set_num_threads(config.threads)
    model.to(device)
    model.train()
    if mask is not None:
        mask = mask.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                  weight_decay=config.weight_decay)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CHECKPOINT_FILE).is_file():  # a new run, or one killed before its first checkpoint
        (out / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False), encoding="utf-8")
        (out / ENVIRONMENT_FILE).unlink(missing_ok=True)
    if is_complete(out):
        if config.keep_every and not (out / KEPT_DIR).is_dir():
            warn(f"{out} was trained already without keep_every: checkpoints are kept only while training; "
                 "pretrain into a new folder to keep them")
        return PretrainResult(out, 0, 0.0, math.nan, saved=False)
    check_environment(out, config)
    start_step = load_checkpoint(out, model, optimizer)  # loads into the parameters, already on the device
    from transformers.utils import logging as hf_logging

    tokenizer = build_tokenizer(corpus.words)
    hf_logging.disable_progress_bar()  # save_pretrained's shard bar, once per kept checkpoint and at the end
    if config.keep_every and start_step == 0:
        save_kept(out, 0, model, tokenizer)  # the initialisation: the reference of "weights moved by training"
    log: list[tuple[int | float | str, ...]] = []
    last_step = config.steps if stop_after is None else min(config.steps, start_step + stop_after)
    start = time.perf_counter()
    # the seconds column counts the whole run: a resumed run goes on from the time its last kept row records
    earlier = [float(row["seconds"]) for row in read_log(out) if int(row["step"]) <= start_step and row.get("seconds")]
    logged_from = start - (earlier[-1] if earlier else 0.0)
    running, seen, loss_value = 0.0, 0, math.nan
    with _progress(progress) as bar:
        # named by its folder: `iclgd momentum` trains several runs (runs/vanilla-s0, ...) one after another
        task = bar.add_task(f"pretrain {config.corpus} ({Path(out).name})", total=config.steps, completed=start_step,
                            info="")
        for step in range(start_step + 1, last_step + 1):
            ids = batch_ids(corpus, config, step).to(device)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            loss = next_token_loss(model, ids, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            running, seen = running + loss.item(), seen + 1
            if step % config.log_every == 0 or step == config.steps:
                loss_value = running / seen
                probe = icl_probe(model, corpus, config)
                measures = [(probe or {}).get(name) for name in PROBE_COLUMNS]
                log.append((step, loss_value, config.lr_at(step), time.perf_counter() - logged_from,
                            *("" if value is None else value for value in measures)))
                running, seen = 0.0, 0
                shown = "" if probe is None else f", ICL@{probe_k(config)} {probe['icl_accuracy']:.2f}"
                bar.update(task, completed=step, info=f"loss {loss_value:.4f}{shown}")
            if config.keep_every and (step % config.keep_every == 0 or step == config.steps):
                save_kept(out, step, model, tokenizer)
            if step % config.checkpoint_every == 0 or step == config.steps:
                _log_rows(out, log, start_step)
                save_checkpoint(out, step, model, optimizer)
    seconds = time.perf_counter() - start
    if last_step == config.steps:
        model.to("cpu").eval()
        save_final(out, model, tokenizer)
    return PretrainResult(out, last_step - start_step, seconds, loss_value, saved=last_step == config.steps)
