"""Run one compare unit and store it: skipped when its results already exist (resume = run again)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from iclgd.checks import check_device, check_output_dir
from iclgd.errors import UserError, warn
from iclgd.experiments.compare import capped_eval_sizes, run_compare
from iclgd.experiments.config import CAPTURE_LEVELS, CompareConfig
from iclgd.models.loading import model_files, model_sha256
from iclgd.runner.results import read_record
from iclgd.runner.store import is_done, write_unit
from iclgd.runs import remove_stale
from iclgd.tasks import Task, TaskData, load_splits, load_task


def check_unchanged(cfg: CompareConfig, unit_dir: Path, data: tuple[Task, TaskData] | None = None, *,
                    model: bool = True, record: dict | None = None) -> None:
    """A finished unit is reused only while what it was computed from is unchanged: its local model's files
    (:func:`check_model_unchanged`) and its task's template, label words and local data. The unit id names a model
    or task file by its path, and an edited task file or data file would otherwise answer with old results.
    ``data``: the task and its rows, where the caller has them; else they are read (and, where the data is not
    here, the task is not checked: the old results are shown as they are). ``model=False``: the model is not
    checked (on Ray or SLURM its path is the worker's). ``record``: the unit's record, where the caller has read it."""
    record = read_record(unit_dir) if record is None else record
    if model:
        check_model_unchanged(cfg, unit_dir, record)
    if data is None:
        try:
            task = load_task(cfg.task)
            data = task, load_splits(task, data_dir=cfg.data_dir)
        except UserError:
            return
    task, rows = data
    try:
        template = task.template(cfg.template)
    except UserError:
        template = None
    # label words in their order (the labels' indices); the data revision of local files only: a hub repo's commit
    # moves with edits (a README, another subset) that need not touch the split
    words = record.get("label_words") or {}
    now = {"template": template, "label_words": json.dumps(list(task.label_words.items()))}
    then = {"template": record.get("template"), "label_words": json.dumps(list(words.items()))}
    if str(record.get("dataset_revision")).startswith("local:"):
        now["dataset_revision"], then["dataset_revision"] = rows.revision, record["dataset_revision"]
    changed = [name for name in now if name in record and now[name] != then[name]]
    if changed:
        raise UserError(f"task {cfg.task} changed since unit {unit_dir.name} was computed from it (what differs: "
                        f"{', '.join(changed)}): delete {unit_dir} to recompute it, or write to another --out")


def check_model_unchanged(cfg: CompareConfig, unit_dir: Path, record: dict | None = None) -> None:
    """A finished unit of a local model is reused only while the model's files are the ones it recorded: the unit id
    names the model by its path, and a folder whose weights were replaced would otherwise answer with old results."""
    model = (record if record is not None else read_record(unit_dir)).get("model", {})
    recorded, current = model.get("files"), model_files(cfg.model)
    if recorded is None or current is None or recorded == current:
        return
    changed = {name for name in {*recorded, *current} if recorded.get(name) != current.get(name)}
    hashes = model.get("sha256")
    if hashes is not None and set(recorded) == set(current):  # same files, new times (a copy): compare contents
        now = model_sha256(cfg.model, changed)
        changed = {name for name in changed if hashes.get(name) != now.get(name)}
        if not changed:
            return
    raise UserError(f"model {cfg.model} changed since unit {unit_dir.name} was computed from it "
                    f"({', '.join(sorted(changed))} differ{' in content' if hashes else ' in size or time'}): delete "
                    f"{unit_dir} to recompute it, or write to another --out")


def fewer_captures(cfg: CompareConfig, record: dict) -> str | None:
    """The captures level a finished unit (its ``record``) stored, where it is below the one ``cfg`` asks for (else
    None): captures are no part of the unit id (they change nothing computed), so a rerun finds the unit done and
    stores nothing more."""
    stored = record.get("config", {}).get("captures", "compact")
    if stored in CAPTURE_LEVELS and CAPTURE_LEVELS.index(stored) < CAPTURE_LEVELS.index(cfg.captures):
        return stored
    return None


def warn_fewer_captures(units: list[tuple[Path, str]], asked: str) -> None:
    """One warning for the finished units (folder, stored level) that keep fewer captures than ``asked``."""
    if units:
        folder, stored = units[0]
        more = f" (and {len(units) - 1} more finished unit(s) of this run)" if len(units) > 1 else ""
        warn(f"unit {folder.name} is done with captures {stored}{more}, and captures are no part of the unit id: it "
             f"keeps what it stored; to store captures {asked}, delete {folder}{' and the others' if more else ''} "
             "and rerun, or write to another --out")


def run_and_store(cfg: CompareConfig, *, show_progress: bool = True) -> Path:
    """The unit's results folder: ``<out>/<unit_id>/``, written atomically only when the unit succeeds.

    The output folder and the device are checked first: a bad --out is not found after the whole computation.
    """
    out = check_output_dir(cfg.out)
    check_device(cfg.device)
    [cfg] = capped_eval_sizes([cfg])  # an eval_size past the split is the whole split: one unit, one id
    unit = cfg.unit_id()
    if is_done(out, unit):
        record = read_record(out / unit)
        check_unchanged(cfg, out / unit, record=record)
        stored = fewer_captures(cfg, record)
        warn_fewer_captures([(out / unit, stored)] if stored else [], cfg.captures)
        shell = Console(stderr=True, soft_wrap=True)
        shell.print(f"{unit}: already done in {out} (delete the folder to rerun)", style="dim", markup=False,
                    highlight=False)
        return out / unit
    remove_stale(out)  # temporary folders of a compare or sweep killed while writing
    result = run_compare(cfg, show_progress=show_progress)
    return write_unit(out, unit, cfg.model_dump(), result)
