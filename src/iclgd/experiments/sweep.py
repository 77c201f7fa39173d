"""A sweep: a grid of compare units from one YAML file, run in-process, on Ray or on SLURM.

    base:  {model: ..., task: sst2, shots: 32, lr: 5.0e-4, methods: [gd, lcgd]}   # fields of every unit
    runs:  [{seed: 2, order: 0}, {seed: 3, order: 1}]                           # listed units (optional)
    grid:  {untrained: [null, all, trained_embeddings]}                          # cartesian product (optional)
    out: results/deutch2024
    backend: local          # local | ray | slurm

Units = runs x grid. Finished units are skipped, so a crashed sweep resumes when run again.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from iclgd.checks import check_device, check_output_dir
from iclgd.config_files import read_yaml_mapping, unknown_key_text
from iclgd.errors import UserError
from iclgd.experiments.compare import capped_eval_sizes, check_ft_shots, check_orderings, run_compare
from iclgd.experiments.config import CompareConfig, load_config
from iclgd.experiments.run import check_unchanged, fewer_captures, warn_fewer_captures
from iclgd.models.loading import check_source
from iclgd.runner.results import read_record
from iclgd.runner.store import is_done
from iclgd.runner.sweep import SweepReport, run_sweep
from iclgd.tasks import load_splits, load_task, sample_demo_indices

SWEEP_KEYS = {"base", "runs", "grid", "out", "backend", "ray_address", "slurm"}


def expand(spec: dict[str, Any], overrides: dict[str, Any] | None = None,
           where: str = "the sweep file") -> list[CompareConfig]:
    """The unit configs of a sweep spec: base + each run + each grid point (+ CLI overrides); ``where`` names the
    spec in errors."""
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise UserError(f"unknown sweep key(s) {sorted(unknown)}: a sweep file has {sorted(SWEEP_KEYS)}")
    if not isinstance(spec.get("base") or {}, dict):
        raise UserError("sweep `base` must be a mapping of unit fields, e.g. {model: smollm2-135m, task: sst2}")
    base = dict(spec.get("base") or {})
    if "out" in spec:
        base["out"] = spec["out"]
    runs = spec.get("runs") or [{}]
    grid = spec.get("grid") or {}
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError("sweep `runs` must be a list of mappings, e.g. [{seed: 2, order: 0}]")
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise UserError("sweep `grid` must map field names to lists of values, e.g. {seed: [1, 2, 3]}")
    empty = [name for name, values in grid.items() if not values]
    if empty:
        raise UserError(f"sweep `grid` lists no values for {', '.join(empty)}: give at least one, or drop the key")
    parts = [("`base`", base), *((f"`runs` entry {n}", run) for n, run in enumerate(runs, 1)), ("`grid`", grid)]
    for part, mapping in parts:  # name the part a misspelt key sits in, not the run it was merged into
        for key in mapping:
            if key not in CompareConfig.model_fields:
                raise UserError(f"bad setting in {where}, {part}: {unknown_key_text(key, CompareConfig)}: fix the key "
                                "and run again")
    configs = []
    for number, run in enumerate(runs, start=1):
        source = f"{where}, `runs` entry {number}" if spec.get("runs") else where
        for point in itertools.product(*grid.values()):
            fields = {**base, **run, **dict(zip(grid, point, strict=True)), **(overrides or {})}
            configs.append(load_config(None, fields, source=source))
    return configs


def load_sweep(path: str | Path) -> dict[str, Any]:
    spec = read_yaml_mapping(path, example="configs/deutch2024/sst2.yaml")
    if "base" not in spec:
        raise UserError(f"sweep file {path} needs a `base:` mapping of unit fields (and `runs:` or `grid:`)")
    return spec


def unit_label(cfg: CompareConfig) -> str:
    """A unit as a sweep's reader finds it: its model, task, k and seed, and the fields of a grid that are set."""
    shown = {"model": cfg.model, "task": cfg.task, "shots": cfg.shots, "seed": cfg.seed}
    defaults = CompareConfig.model_fields
    others = {name: value for name, value in cfg.model_dump(exclude={"out", *shown}).items()
              if value != defaults[name].default and name in ("template", "order", "ft_shots", "orderings",
                                                               "untrained", "data_dir", "device")}
    return ", ".join(f"{name} {value}" for name, value in {**shown, **others}.items())


def check_units(configs: list[CompareConfig], *, local: bool = True) -> None:
    """Bad input in any unit (task, template, k, device) fails the sweep before the first unit runs and before
    anything is written; a typo in the fifth grid point does not surface after four units of model work. A finished
    unit whose task or local model changed since is refused too (:func:`check_unchanged`)."""
    data = {}
    for number, cfg in enumerate(configs, 1):
        try:
            if (cfg.task, cfg.data_dir) not in data:
                task = load_task(cfg.task)
                data[cfg.task, cfg.data_dir] = task, load_splits(task, data_dir=cfg.data_dir)
            task, splits = data[cfg.task, cfg.data_dir]
            task.template(cfg.template)
            check_ft_shots(cfg, task.name, len(splits.pool))
            sample_demo_indices([ex.label for ex in splits.pool], max(cfg.shots, cfg.ft_shots or 0), cfg.seed,
                                balanced=cfg.balanced)
            check_orderings(cfg.orderings, cfg.shots)
            if local:  # on Ray or SLURM the device is the worker's
                check_device(cfg.device)
        except UserError as err:
            if len(configs) == 1:
                raise
            raise UserError(f"unit {number} of {len(configs)} ({unit_label(cfg)}): {err}") from None
    check_finished(configs, data, model=local)  # on Ray or SLURM the model's path is the worker's
    if local:
        for model in sorted({cfg.model for cfg in configs}):
            check_source(model, fetch_named=True)  # a named model not fetched yet: `iclgd demo` fetches it
        check_tokens(configs, {key: task for key, (task, _) in data.items()})


def check_finished(configs: list[CompareConfig], data: dict[tuple, Any] | None = None, *, model: bool = True) -> None:
    """Every finished unit of ``configs`` whose task or local model changed since it was computed
    (:func:`check_unchanged`), named in one line rather than one per rerun. ``data``: (task, rows) by (task,
    data_dir), where the caller has read them; else read once per task, and only for tasks with finished units."""
    data = {} if data is None else data
    changed, short = [], []
    for cfg in configs:
        unit_dir = Path(cfg.out) / cfg.unit_id()
        if not is_done(unit_dir.parent, unit_dir.name):
            continue
        record = read_record(unit_dir)
        stored = fewer_captures(cfg, record)
        if stored is not None:
            short.append((unit_dir, stored, cfg.captures))
        key = cfg.task, cfg.data_dir
        if key not in data:
            try:
                task = load_task(cfg.task)
                data[key] = task, load_splits(task, data_dir=cfg.data_dir)
            except UserError:  # the data is not here: check_unchanged leaves the task unchecked
                data[key] = None
        try:
            check_unchanged(cfg, unit_dir, data[key], model=model, record=record)
        except UserError as err:
            changed.append((unit_dir.name, err))
    for asked in dict.fromkeys(level for _, _, level in short):
        warn_fewer_captures([(folder, stored) for folder, stored, level in short if level == asked], asked)
    if changed:
        others = [name for name, _ in changed[1:]]
        more = (f"; {len(others)} more finished unit(s) changed too: {', '.join(others[:5])}"
                f"{', ...' if len(others) > 5 else ''}") if others else ""
        raise UserError(f"{changed[0][1]}{more}")


def check_tokens(configs: list[CompareConfig], tasks: dict[tuple, Any]) -> None:
    """Each unit's BOS, separator, label words, context and trained layers against its model's tokenizer and config
    (no weights read): a task whose label word is two tokens for the second model fails the sweep before the first
    unit, not after the first model's units. Named models not fetched yet are left to their units."""
    from iclgd.experiments.compare import check_unit_tokens
    from iclgd.models import offline
    from iclgd.models.loading import load_tokenizer

    def not_fetched(model: str) -> bool:
        return (model in offline.NAMED_MODELS and not Path(model).expanduser().exists()
                and not offline.is_fetched(offline.named_model(model)))

    checked, tokenizers = set(), {}
    for cfg in configs:
        key = cfg.model, cfg.task, cfg.data_dir, cfg.bos, cfg.separator, cfg.max_context, tuple(cfg.methods)
        if key in checked or not_fetched(cfg.model):
            continue
        checked.add(key)
        if cfg.model not in tokenizers:
            tokenizers[cfg.model] = load_tokenizer(cfg.model)
        check_unit_tokens(cfg, tasks[cfg.task, cfg.data_dir], *tokenizers[cfg.model])


def run_unit(cfg: CompareConfig):
    """One unit where a backend puts it (module level: Ray and submitit pickle it)."""
    return run_compare(cfg, show_progress=False)


def run_sweep_file(path: str | Path, *, out: str | None = None, backend: str | None = None,
                   progress: bool = True) -> tuple[SweepReport, list[CompareConfig]]:
    spec = load_sweep(path)
    if out is not None:
        check_output_dir(out)  # an empty --out is refused, not taken for the file's
    configs = expand(spec, {"out": out} if out is not None else None, where=f"sweep file {path}")
    outs = {c.out for c in configs}
    if len(outs) != 1:
        raise UserError(f"a sweep writes to one results folder; its units name {sorted(outs)}: set `out:` once")
    backend = backend or spec.get("backend", "local")
    check_output_dir(next(iter(outs)))
    configs = capped_eval_sizes(configs)
    check_units(configs, local=backend == "local")
    try:
        report = run_sweep(configs, run_unit, outs.pop(), key=lambda c: c.unit_id(), backend=backend,
                           ray_address=spec.get("ray_address"), slurm=spec.get("slurm"), progress=progress)
    except RuntimeError as err:
        if isinstance(err.__cause__, UserError):  # bad input in a unit: one line, exit 2
            raise err.__cause__ from None
        raise
    return report, configs
