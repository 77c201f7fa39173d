"""`iclgd reproduce <paper> --model M --out DIR`: a paper's protocol on any model, run as a resumable sweep (the
units `iclgd sweep` makes), then its report, ``DIR/report.md`` and ``DIR/report.html``: the paper's tables beside
its published numbers, its figures, every unit's config and the library versions.

    dai2023     per task: one unit at Dai's demo seed, k = 32, GD (K/V, one SGD step per demo)
    deutch2024  per task: 3 runs (Dai's seed + i, order i), GD and LCGD, the trained model and 4 untrained variants
                (all, keep_layernorm, trained_embeddings by the family's own init; keep_layernorm_fairseq by fairseq's)

``--quick`` sizes a run for 2 CPU cores and the offline models: k = 8, 100 eval rows, the halving lr search on
100 held-out rows, and for deutch2024 two runs and one untrained variant (all): minutes, not hours.

The learning rate is Dai's published one on Dai's own model and tasks, else searched on the trained model; the
untrained units reuse the lr of their trained unit, as Deutch et al. reuse Dai's, so the trained units run first.
A protocol is one entry of PROTOCOLS.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iclgd.checks import check_output_dir
from iclgd.errors import UserError
from iclgd.experiments.compare import run_compare
from iclgd.experiments.config import CompareConfig, load_config
from iclgd.experiments.sweep import check_units
from iclgd.finetune import published_seed
from iclgd.finetune.lr_search import published_size
from iclgd.runner.sweep import run_sweep


@dataclass(frozen=True)
class Protocol:
    """One paper's experiment as unit fields: ``fields`` for every unit (``quick`` overrides them), ``runs`` (seed,
    order) runs per task starting at Dai's seed, and the model ``variants`` (None: the trained model)."""

    title: str
    model: str  # the paper's own model
    tasks: tuple[str, ...]  # the paper's tasks
    quick_tasks: tuple[str, ...]  # offline real tasks, for --quick without --tasks
    fields: dict[str, Any]
    runs: int = 1
    variants: tuple[str | None, ...] = (None,)
    quick: dict[str, Any] = field(default_factory=dict)
    quick_runs: int = 1
    quick_variants: tuple[str | None, ...] = (None,)


QUICK_FIELDS = {"shots": 8, "eval_size": 100, "lr_search": "halving", "lr_search_rows": 100, "kendall_examples": 50,
                "batch_size": 32}
DAI_TASKS = ("sst2", "sst5", "mr", "subj", "agnews", "cb")

PROTOCOLS: dict[str, Protocol] = {
    "dai2023": Protocol(
        title="Dai et al. 2023, Why Can GPT Learn In-Context?", model="KoboldAI/fairseq-dense-1.3B",
        tasks=DAI_TASKS, quick_tasks=("wordnet-noun", "vader-movie"),
        fields={"shots": 32, "methods": ["gd"], "position": "label_token", "eval_size": 2000, "kendall_examples": 100},
        quick=QUICK_FIELDS,
    ),
    "deutch2024": Protocol(
        title="Deutch et al. 2024, In-context Learning and Gradient Descent Revisited",
        model="KoboldAI/fairseq-dense-1.3B", tasks=DAI_TASKS, quick_tasks=("wordnet-noun",),
        fields={"shots": 32, "methods": ["gd", "lcgd"], "position": "label_token", "eval_size": 2000,
                "kendall_examples": 100},
        runs=3, variants=(None, "all", "keep_layernorm", "trained_embeddings", "keep_layernorm_fairseq"),
        quick=QUICK_FIELDS, quick_runs=2, quick_variants=(None, "all"),
    ),
}


def is_papers_model(protocol: Protocol, model: str) -> bool:
    return published_size(model) == published_size(protocol.model) is not None


def unit_configs(paper: str, model: str, tasks: list[str] | None, quick: bool, out: str | Path,
                 lrs: dict[tuple[str, int], float] | None = None,
                 overrides: dict[str, Any] | None = None) -> tuple[list[CompareConfig], list[CompareConfig]]:
    """The protocol's trained units and its untrained ones (each with its trained unit's lr from ``lrs``, keyed by
    (task, seed); None where not known yet). ``overrides``: unit fields set on every unit (e.g. data_dir)."""
    protocol = protocol_of(paper)
    tasks = list(tasks or (protocol.quick_tasks if quick else protocol.tasks))
    fields = {**protocol.fields, **(protocol.quick if quick else {}), **(overrides or {}), "model": model,
              "out": str(out)}
    runs = protocol.quick_runs if quick else protocol.runs
    variants = protocol.quick_variants if quick else protocol.variants
    trained, untrained = [], []
    for task in tasks:
        first = published_seed("1.3B", task) or 1  # Dai's seeds (Deutch et al. count on from them)
        for i in range(runs):
            run = {"task": task, "seed": first + i, "order": i if runs > 1 else 0}
            trained.append(load_config(None, {**fields, **run}))
            lr = (lrs or {}).get((task, first + i))
            untrained += [load_config(None, {**fields, **run, "untrained": v, "lr": lr}) for v in variants if v]
    return trained, untrained


def protocol_of(paper: str) -> Protocol:
    if paper not in PROTOCOLS:
        raise UserError(f"unknown paper {paper!r}: iclgd reproduces {', '.join(PROTOCOLS)}")
    return PROTOCOLS[paper]


def _run(cfg: CompareConfig):
    return run_compare(cfg, show_progress=False)


def run_reproduce(paper: str, model: str, out: str | Path, *, tasks: list[str] | None = None, quick: bool = False,
                  overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the protocol's units in ``out``; return what the report needs: the configs, the lr each
    trained unit chose, the units this call ran and its wall time. Every input is checked before any model work."""
    from iclgd.experiments.demo import ensure_model

    protocol = protocol_of(paper)
    out = check_output_dir(out)
    trained, untrained = unit_configs(paper, model, tasks, quick, out, overrides=overrides)
    check_units(trained + untrained)  # tasks, templates, demos, device, the model's source
    started = time.time()
    ensure_model(model)
    key = lambda cfg: cfg.unit_id()  # noqa: E731
    ran = run_sweep(trained, _run, out, key=key, progress=progress).ran
    lrs = {(cfg.task, cfg.seed): json.loads((out / cfg.unit_id() / "record.json").read_text())["lr"]
           for cfg in trained}
    trained, untrained = unit_configs(paper, model, tasks, quick, out, lrs, overrides)
    if untrained:
        ran += run_sweep(untrained, _run, out, key=key, progress=progress).ran
    return {"protocol": protocol, "configs": trained + untrained, "lrs": lrs, "ran": ran,
            "wall_s": time.time() - started, "quick": quick, "model": model}


def config_text(out: Path, configs: list[CompareConfig]) -> str:
    """Every unit's full config as its record holds it, one YAML document per unit."""
    documents = []
    for cfg in configs:
        record = json.loads((out / cfg.unit_id() / "record.json").read_text())
        documents.append(yaml.safe_dump({"unit": cfg.unit_id(), **record["config"]}, sort_keys=False))
    return "---\n".join(documents)


def versions_and_times(out: Path, configs: list[CompareConfig]) -> tuple[dict[str, str], float]:
    """The library versions (of the first unit; every unit records its own) and the units' summed compute time."""
    records = [json.loads((out / cfg.unit_id() / "record.json").read_text()) for cfg in configs]
    return records[0]["versions"], sum(r["timings"].get("total_s", 0.0) for r in records)
