"""`iclgd reproduce <paper> --model M --out DIR`: a paper's protocol on any model, run as a resumable sweep (the
units `iclgd sweep` makes), then its report, ``DIR/report.md`` and ``DIR/report.html``: the paper's tables beside
its published numbers, its figures, every unit's config and the library versions.

    dai2023     per task: one unit at Dai's demo seed, k = 32, GD (K/V, one SGD step per demo)
    deutch2024  per task: 3 runs (Dai's seed + i, order i), GD and LCGD, the trained model and 4 untrained variants
                (all, keep_layernorm, trained_embeddings by the family's own init; keep_layernorm_fairseq by fairseq's)

    shen2024    per task: Figure 4 (order sensitivity), Figure 5 (output distributions over epochs and lrs), Table 1
                (GD on more demos), each as in configs/shen2024
    vonoswald2023  linear self-attention trained on linear regression (1-3 layers) vs GD and GD++, out of
                distribution, and Shen et al.'s critique (iclgd.synthetic.linreg.reproduce): no --model, no --tasks

``--quick`` sizes a run for 2 CPU cores and the offline models: k = 8, 100 eval rows, the halving lr search on
100 held-out rows, and for deutch2024 two runs and one untrained variant (all); for shen2024 few epochs and units
(configs/shen2024/offline-* cut down): minutes, not hours.

The learning rate is Dai's published one on Dai's own model and tasks, else searched on the trained model; the
untrained units reuse the lr of their trained unit, as Deutch et al. reuse Dai's, so the trained units run first.
A protocol is one entry of PROTOCOLS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclgd.checks import check_output_dir
from iclgd.errors import UserError
from iclgd.experiments.compare import capped_eval_sizes
from iclgd.experiments.config import CompareConfig, load_config
from iclgd.experiments.sweep import check_finished, check_units, run_unit
from iclgd.finetune import published_seed
from iclgd.finetune.lr_search import published_size
from iclgd.runner.sweep import run_sweep
from iclgd.synthetic.linreg.reproduce import VON_OSWALD, LinregProtocol, LinregReproduction, run_linreg_reproduce


@dataclass(frozen=True)
class Protocol:
    """One paper's experiment: ``units(task, quick)`` gives the trained units' fields for one task (seed, order, k,
    methods, ...), each run beside the model ``variants`` (None: the trained model)."""

    title: str
    model: str  # the paper's own model
    tasks: tuple[str, ...]  # the paper's tasks
    quick_tasks: tuple[str, ...]  # offline real tasks, for --quick without --tasks
    units: Callable[[str, bool], list[dict[str, Any]]]
    variants: tuple[str | None, ...] = (None,)
    quick_variants: tuple[str | None, ...] = (None,)


QUICK = {"shots": 8, "eval_size": 100, "lr_search": "halving", "lr_search_rows": 100, "kendall_examples": 50,
         "batch_size": 32}
DAI = {"shots": 32, "methods": ["gd"], "position": "label_token", "eval_size": 2000, "kendall_examples": 100}
DAI_TASKS = ("sst2", "sst5", "mr", "subj", "agnews", "cb")


def _runs(task: str, n: int) -> list[dict[str, Any]]:
    """n (seed, order) runs from Dai's seed for the task (1 for other tasks), as Deutch et al. count on from it."""
    first = published_seed("1.3B", task) or 1
    return [{"seed": first + i, "order": i if n > 1 else 0} for i in range(n)]


def _dai_units(task: str, quick: bool) -> list[dict[str, Any]]:
    return [{**DAI, **(QUICK if quick else {}), **run} for run in _runs(task, 1)]


def _deutch_units(task: str, quick: bool) -> list[dict[str, Any]]:
    return [{**DAI, "methods": ["gd", "lcgd"], **(QUICK if quick else {}), **run}
            for run in _runs(task, 2 if quick else 3)]


# Shen et al.: Figure 4 (order sensitivity over orderings of the same demos), Figure 5 (output distributions over
# epochs and learning rates, W_V of one layer beside the whole model), Table 1 (GD on more demos than ICL's 8).
# Full: their grid (LLaMA-7B, 200 epochs: a GPU); quick: configs/shen2024/offline-* cut to minutes.
SHEN = {"seed": 1, "position": "label_token", "captures": "none"}


def _shen_units(task: str, quick: bool) -> list[dict[str, Any]]:
    if quick:
        fig4 = [{"shots": 8, "eval_size": 50, "orderings": 3, "epochs": 5, "lr": 1e-3,
                 "methods": ["whole-gd-label", "whole-sgd2-label"]}]
        fig5 = [{"shots": 8, "eval_size": 50, "epochs": 10, "output_metrics": True, "lr": 5e-3,
                 "methods": ["whole-gd-label", "wv:middle-gd-label"]}]
        table1 = [{"shots": 8, "eval_size": 50, "epochs": 5, "lr": 1e-3, "methods": ["whole-gd-label"],
                   "ft_shots": n} for n in (8, 32)]
    else:
        methods = ["whole-gd-label", "whole-sgd1-label", "whole-sgd2-label", "whole-sgd4-label", "whole-adam-label"]
        fig4 = [{"shots": 8, "orderings": 10, "epochs": 200, "lr": 1e-4, "methods": methods}]
        fig5 = [{"shots": shots, "epochs": 200, "output_metrics": True, "lr": lr,
                 "methods": ["whole-gd-label", "wv:middle-gd-label", "wv:deep-gd-label"]}
                for shots in (1, 2, 4, 8) for lr in (1e-3, 5e-3, 1e-4, 5e-4)]
        table1 = [{"shots": 8, "epochs": 200, "lr": 1e-4, "methods": ["whole-gd-label"], "ft_shots": n}
                  for n in (8, 32, 128, 512)]
    return [{**SHEN, **unit} for unit in fig4 + fig5 + table1]


PROTOCOLS: dict[str, Protocol | LinregProtocol] = {
    "dai2023": Protocol("Dai et al. 2023, Why Can GPT Learn In-Context?", "KoboldAI/fairseq-dense-1.3B", DAI_TASKS,
                        ("wordnet-noun", "vader-movie"), _dai_units),
    "deutch2024": Protocol(
        "Deutch et al. 2024, In-context Learning and Gradient Descent Revisited", "KoboldAI/fairseq-dense-1.3B",
        DAI_TASKS, ("wordnet-noun",), _deutch_units,
        variants=(None, "all", "keep_layernorm", "trained_embeddings", "keep_layernorm_fairseq"),
        quick_variants=(None, "all")),
    "shen2024": Protocol("Shen, Mishra, Khashabi 2024, Do pretrained Transformers Learn In-Context by Gradient "
                         "Descent?", "huggyllama/llama-7b", ("agnews", "cb", "sst2", "rte"), ("wordnet-noun",),
                         _shen_units),
    "vonoswald2023": VON_OSWALD,
}


def is_papers_model(protocol: Protocol, model: str) -> bool:
    if protocol.model.startswith("KoboldAI/"):
        return published_size(model) == published_size(protocol.model)
    return model.rstrip("/").lower().endswith(protocol.model.split("/")[-1])


def unit_configs(paper: str, model: str, tasks: list[str] | None, quick: bool, out: str | Path,
                 lrs: dict[str, float] | None = None,
                 overrides: dict[str, Any] | None = None) -> tuple[list[CompareConfig], list[CompareConfig]]:
    """The protocol's trained units and its untrained ones (each with its trained unit's lr from ``lrs``, keyed by the
    trained unit's id; where not known yet, the lr the trained unit is given, or None when it searches one).
    ``overrides``: unit fields set on every unit (e.g. data_dir)."""
    protocol = protocol_of(paper)
    if isinstance(protocol, LinregProtocol):
        raise UserError(f"{paper} trains its own linear models: it has no compare units")
    tasks = list(tasks or (protocol.quick_tasks if quick else protocol.tasks))
    variants = protocol.quick_variants if quick else protocol.variants
    units = [{**fields, **(overrides or {}), "task": task, "model": model, "out": str(out)}
             for task in tasks for fields in protocol.units(task, quick)]
    # capped: the ids every run and report agree on (each task's split read once)
    trained = capped_eval_sizes([load_config(None, fields) for fields in units])
    lrs = lrs or {}
    untrained = capped_eval_sizes([load_config(None, {**fields, "untrained": v, "lr": lrs.get(cfg.unit_id(), cfg.lr)})
                                   for fields, cfg in zip(units, trained, strict=True) for v in variants if v])
    return trained, untrained


def protocol_of(paper: str) -> Protocol:
    if paper not in PROTOCOLS:
        raise UserError(f"unknown paper {paper!r}: iclgd reproduces {', '.join(PROTOCOLS)}")
    return PROTOCOLS[paper]


@dataclass
class Reproduction:
    """What a reproduce run leaves for its report: the units (trained first), the lr of each trained unit (by unit
    id), the units this call ran (the others were done already) and its wall time."""

    paper: str
    protocol: Protocol
    model: str
    quick: bool
    configs: list[CompareConfig]
    lrs: dict[str, float]
    ran: list[str]
    wall_s: float


def check_one_protocol(out: Path, trained: list) -> None:
    """The report reads the whole folder: a finished unit that is none of this run's trained units nor an untrained
    variant of one (another protocol, --quick or not, other tasks or fields) is refused before any unit runs."""
    from iclgd.report.paired import pairing_key
    from iclgd.runner.results import finished_configs

    trained_ids = {cfg.unit_id() for cfg in trained}
    ours = {pairing_key(cfg.model_dump()) for cfg in trained}
    for unit_dir, stored in finished_configs(out):
        # An untrained unit's id holds its trained unit's lr, known only once that has run: it is ours where it
        # pairs with one of ours and its folder is the id its config has today (not a unit of an older id rule,
        # such as output metrics before their floor ordering, which the report would pool with the new one).
        if unit_dir.name in trained_ids or (stored.get("untrained") is not None and pairing_key(stored) in ours
                                             and _current_id(stored) == unit_dir.name):
            continue
        raise UserError(f"{out} holds unit {unit_dir.name}, which is not one of this reproduction's (another "
                        "protocol, --quick or not, other tasks or settings, or an older iclgd's unit id): its report "
                        "reads the whole folder; give this run its own --out")


def _current_id(stored: dict[str, Any]) -> str | None:
    """The unit id a stored config has under today's rules (None where it is no valid config today)."""
    try:
        return CompareConfig(**stored).unit_id()
    except (ValueError, TypeError):
        return None


def run_reproduce(paper: str, model: str | None, out: str | Path, *, tasks: list[str] | None = None,
                  quick: bool = False, overrides: dict[str, Any] | None = None,
                  progress: bool = True) -> Reproduction | LinregReproduction:
    """Run (or resume) the protocol's units in ``out``; return what the report needs: the configs, the lr each
    trained unit chose, the units this call ran and its wall time. Every input is checked before any model work."""
    from iclgd.experiments.demo import ensure_model

    protocol = protocol_of(paper)
    if isinstance(protocol, LinregProtocol):
        given = [name for name, value in (("--model", model), ("--tasks", tasks), ("--device", overrides)) if value]
        if given:
            raise UserError(f"{paper} trains linear self-attention on linear regression on the CPU: it takes no "
                            f"{', '.join(given)}; drop {'them' if len(given) > 1 else 'it'}")
        return run_linreg_reproduce(paper, protocol, out, quick=quick, progress=progress)
    if not model:
        raise UserError(f"{paper} runs on a language model: pass --model (a hub id, folder, .gguf file or named "
                        "model, e.g. --model smollm2-135m)")
    out = check_output_dir(out)
    trained, untrained = unit_configs(paper, model, tasks, quick, out, overrides=overrides)
    check_one_protocol(out, trained)
    check_units(trained + untrained)  # tasks, templates, demos, device, the model's source
    checked = {cfg.unit_id() for cfg in untrained}
    started = time.time()
    ensure_model(model)
    key = lambda cfg: cfg.unit_id()  # noqa: E731
    ran = run_sweep(trained, run_unit, out, key=key, progress=progress).ran
    lrs = {cfg.unit_id(): json.loads((out / cfg.unit_id() / "record.json").read_text())["lr"] for cfg in trained}
    trained, untrained = unit_configs(paper, model, tasks, quick, out, lrs, overrides)
    if untrained:
        # their ids hold the trained lr only now: a changed finished one is refused (once: not those checked above)
        check_finished([cfg for cfg in untrained if cfg.unit_id() not in checked])
        ran += run_sweep(untrained, run_unit, out, key=key, progress=progress).ran
    return Reproduction(paper, protocol, model, quick, trained + untrained, lrs, ran, time.time() - started)
