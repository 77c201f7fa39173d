"""Run one compare unit and store it: skipped when its results already exist (resume = run again)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from iclgd.checks import check_device, check_output_dir
from iclgd.errors import UserError
from iclgd.experiments.compare import capped_eval_sizes, run_compare
from iclgd.experiments.config import CompareConfig
from iclgd.models.loading import model_files
from iclgd.runner.results import read_record
from iclgd.runner.store import is_done, write_unit
from iclgd.runs import remove_stale


def check_model_unchanged(cfg: CompareConfig, unit_dir: Path) -> None:
    """A finished unit of a local model is reused only while the model's files are the ones it recorded: the unit id
    names the model by its path, and a folder whose weights were replaced would otherwise answer with old results."""
    recorded = read_record(unit_dir).get("model", {}).get("files")
    current = model_files(cfg.model)
    if recorded is None or current is None or recorded == current:
        return
    changed = sorted(name for name in {*recorded, *current} if recorded.get(name) != current.get(name))
    raise UserError(f"model {cfg.model} changed since unit {unit_dir.name} was computed from it ({', '.join(changed)} "
                    f"differ in size or time): delete {unit_dir} to recompute it, or write to another --out")


def run_and_store(cfg: CompareConfig, *, show_progress: bool = True) -> Path:
    """The unit's results folder: ``<out>/<unit_id>/``, written atomically only when the unit succeeds.

    The output folder and the device are checked first: a bad --out is not found after the whole computation.
    """
    out = check_output_dir(cfg.out)
    check_device(cfg.device)
    [cfg] = capped_eval_sizes([cfg])  # an eval_size past the split is the whole split: one unit, one id
    unit = cfg.unit_id()
    if is_done(out, unit):
        check_model_unchanged(cfg, out / unit)
        shell = Console(stderr=True, soft_wrap=True)
        shell.print(f"[dim]{unit}: already done in {out} (delete the folder to rerun)[/dim]")
        return out / unit
    remove_stale(out)  # temporary folders of a compare or sweep killed while writing
    result = run_compare(cfg, show_progress=show_progress)
    return write_unit(out, unit, cfg.model_dump(), result)
