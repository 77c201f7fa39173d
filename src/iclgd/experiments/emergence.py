"""`iclgd emergence`: ICL-vs-GD similarity across pretraining, as ICL emerges (issue 13 B).

If ICL were GD, the similarity of ICL's and GD's changes should rise when ICL appears. For every checkpoint an
``iclgd pretrain --keep-every N`` run kept, one ordinary compare unit (the model folder of that step, the same task,
demos and methods), and the same unit on each untrained variant of the checkpoint, all as one resumable sweep in
``out``; then accuracy and every score against training step (``iclgd.report.emergence``).

The units are Dai's protocol at k = 16 (where the icc model's ICL is full): GD and LCGD (α), Dai's SimAOU /
SimAM / Kendall, Deutch's unnormalised SimAOU and SimAM_Δ, and Shen's output metrics (TO@10, OCS@10 beside their
ICL-vs-ICL floor); the learning rate by the halving search on each checkpoint (a fixed ``lr`` may be given), reused by
its untrained variants. One ordering by default: the floor then gets its own second ordering, one that ends with
another demo (:func:`iclgd.experiments.compare.demo_orders`). Two orderings of the seeded sample end with the same
demo at k = 16, seed 1, which makes a floor of near-identical readings (TO@10 ≈ 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iclgd.checks import check_output_dir
from iclgd.config_files import differences
from iclgd.errors import UserError
from iclgd.experiments.config import CompareConfig, load_config

DEFAULTS: dict[str, Any] = {"shots": 16, "seed": 1, "eval_size": None, "methods": ["gd", "lcgd"],
                            "output_metrics": True, "orderings": 1, "lr_search": "halving", "lr_search_rows": 100,
                            "kendall_examples": 50, "batch_size": 32}


def emergence_configs(run: str | Path, task: str, out: str | Path, *, untrained: tuple[str, ...] = ("all",),
                      fields: dict[str, Any] | None = None,
                      lrs: dict[str, float] | None = None) -> tuple[list[CompareConfig], list[CompareConfig],
                                                                    dict[str, int]]:
    """(the checkpoints' units, their untrained variants' units, the step of each model folder). An untrained unit
    takes its checkpoint's lr from ``lrs`` (by the trained unit's id), as Deutch et al. reuse the trained lr."""
    from iclgd.experiments.compare import capped_eval_sizes
    from iclgd.experiments.weights import checkpoint_folders

    steps = {str(folder): step for step, folder in checkpoint_folders(run)}
    base = {**DEFAULTS, **(fields or {}), "task": task, "out": str(out)}
    trained = capped_eval_sizes([load_config(None, {**base, "model": model}) for model in steps])
    variants = capped_eval_sizes([load_config(None, {**base, "model": cfg.model, "untrained": variant,
                                                     "lr": (lrs or {}).get(cfg.unit_id(), base.get("lr"))})
                                  for variant in untrained for cfg in trained])
    return trained, variants, steps


def check_one_setting(out: Path, trained: list[CompareConfig]) -> None:
    """An emergence folder holds one setting per checkpoint: a finished trained unit of one of ``trained``'s
    checkpoints under another id (another eval size, k, seed, lr, ...) is refused before any unit runs, naming what
    differs, rather than after this setting's units were written beside it."""
    from iclgd.runner.results import finished_configs

    ours = {cfg.model: cfg for cfg in trained}
    for unit_dir, stored in finished_configs(out):
        cfg = ours.get(stored.get("model"))
        if cfg is None or stored.get("untrained") is not None or unit_dir.name == cfg.unit_id():
            continue
        stored_cfg = CompareConfig(**stored)
        asked, there = cfg.unit_fields(), stored_cfg.unit_fields()
        searched = {"lr_search", "lr_search_rows"}  # where either side gives an lr, its lr is what differs
        quiet = searched if cfg.lr is not None or stored_cfg.lr is not None else set()
        differ = differences(there, asked, skip=quiet | (asked.keys() - there.keys()))
        raise UserError(f"{out} holds emergence units of another setting ({differ or 'another unit id'}): an "
                        "emergence folder holds one setting per checkpoint; give this one its own --out")


def run_emergence(run: str | Path, task: str | None, out: str | Path, *, untrained: tuple[str, ...] = ("all",),
                  fields: dict[str, Any] | None = None, progress: bool = True) -> tuple[list[CompareConfig],
                                                                                        dict[str, int]]:
    """Run (or resume) every checkpoint's units in ``out``, trained first; every input is checked before any model
    work; ``task`` None: the held-out task of the run's corpus. Returns the units and the step of each model
    folder."""
    from iclgd.experiments.sweep import check_finished, check_units, run_unit
    from iclgd.experiments.weights import checkpoint_folders
    from iclgd.runner.results import read_record
    from iclgd.runner.sweep import run_sweep
    from iclgd.synthetic.pretrain.train import run_heldout_task

    checkpoint_folders(run)  # a missing run, or one without checkpoints, is named as such before the task
    task = task or run_heldout_task(Path(run))
    out = check_output_dir(out)
    trained, variants, steps = emergence_configs(run, task, out, untrained=untrained, fields=fields)
    check_one_setting(out, trained)
    check_units(trained + variants)
    checked = {cfg.unit_id() for cfg in variants}
    key = lambda cfg: cfg.unit_id()  # noqa: E731
    run_sweep(trained, run_unit, out, key=key, progress=progress)
    lrs = {cfg.unit_id(): read_record(out / cfg.unit_id())["lr"] for cfg in trained}
    trained, variants, steps = emergence_configs(run, task, out, untrained=untrained, fields=fields, lrs=lrs)
    if variants:
        # their ids hold the trained lr only now: a changed finished one is refused (once: not those checked above)
        check_finished([cfg for cfg in variants if cfg.unit_id() not in checked])
        run_sweep(variants, run_unit, out, key=key, progress=progress)
    return trained + variants, steps
