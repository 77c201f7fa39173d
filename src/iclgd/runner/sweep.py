"""Sweeps: run a list of unit configs, skip the finished ones (resume = run again), write each result.

    report = run_sweep(configs, run_unit, out)                      # in this process, one unit at a time
    report = run_sweep(configs, run_unit, out, backend="ray")       # ray.init() here, or ray_address=...
    report = run_sweep(configs, run_unit, out, backend="slurm", slurm={"slurm_partition": "gpu", ...})

``run_unit(config) -> UnitResult`` runs where the backend puts it (a module-level function, so that Ray
and submitit can pickle it); it returns tables and never writes. This driver alone writes results, one
unit at a time, as they arrive. Local runs stop at the first failing unit; Ray and SLURM runs write every
unit that succeeded and then raise the first failure. Ray and submitit are optional (``iclgd[cluster]``).

Local sweeps started at the same time on one folder share the work: each unit is run under a lock
(``<out>/.lock-<unit>``); a unit locked by another process is skipped, then waited for at the end (and run
here if that process died without finishing it). Every unit runs once. Ray and SLURM sweeps do not lock:
run one driver per folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from iclgd.checks import check_output_dir
from iclgd.errors import UserError, warn
from iclgd.progress import log_line
from iclgd.runner.results import check_format, read_record
from iclgd.runner.store import (
    UnitResult,
    is_done,
    lock_holder,
    lock_unit,
    unlock_unit,
    write_unit,
)
from iclgd.runner.units import check_unit_id, unit_id
from iclgd.runs import atomic_file, remove_stale

Backend = Literal["local", "ray", "slurm"]
BACKENDS = ("local", "ray", "slurm")


@dataclass
class SweepReport:
    """Which units this call ran, which were already finished, which another process ran meanwhile (a
    concurrent sweep on the same folder), and which failed (unit -> error text)."""

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    by_others: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict, repr=False)


def _require(module: str, backend: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"backend {backend!r} needs the {module} package, which is not installed: pip install 'iclgd[cluster]'"
        ) from None


def timed_run(run_unit: Callable[[Any], UnitResult], config: Any) -> tuple[UnitResult, float]:
    """Run one unit where the backend put it; return its result and wall-clock seconds."""
    start = time.perf_counter()
    result = run_unit(config)
    if not all(hasattr(result, name) for name in ("metrics", "predictions", "record")):
        raise TypeError(f"run_unit must return a UnitResult, got {type(result).__name__}")
    return result, time.perf_counter() - start


def _write(out: Path, unit: str, config: Any, result: UnitResult, wall_s: float) -> None:
    timings = result.record.setdefault("timings", {})
    if isinstance(timings, dict):
        timings.setdefault("unit_wall_s", round(wall_s, 3))
    result.record.setdefault("written_by", {"pid": os.getpid(), "host": socket.gethostname()})
    write_unit(out, unit, config, result)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[unit]}"),
        disable=not enabled,
    )


def plan(configs: Sequence[Any], out: Path, key: Callable[[Any], str] = unit_id) -> tuple[list, list[str]]:
    """Split ``configs`` into (pending [(unit, config)], finished unit ids); duplicates are dropped. A unit
    folder that exists but is incomplete is an error (it cannot come from this store: someone edited it)."""
    pending, finished, seen = [], [], set()
    for config in configs:
        unit = check_unit_id(key(config))
        if unit in seen:
            continue
        seen.add(unit)
        if is_done(out, unit):
            finished.append(unit)
        elif (Path(out) / unit).exists():
            if (Path(out) / unit / "record.json").is_file():  # a unit of an older iclgd lacks this one's files
                check_format(Path(out) / unit, read_record(Path(out) / unit))
            raise UserError(f"damaged unit folder {Path(out) / unit}: files missing; delete that folder and rerun")
        else:
            pending.append((unit, config))
    return pending, finished


PLANS = "_plans"  # <out>/_plans/<hash of the unit ids>.json: the units each sweep set out to run


def write_plan(out: Path, units: list[str]) -> Path | None:
    """Record the units a sweep set out to run, so that a report on the folder can say which are missing; returns the
    plan file if this call wrote it (None if the same plan was there)."""
    units = sorted(units)
    path = Path(out) / PLANS / f"{hashlib.sha256(chr(10).join(units).encode()).hexdigest()[:16]}.json"
    if path.exists():
        return None
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"units": units}, indent=1) + "\n")
    return path


def missing_units(out: Path) -> tuple[list[str], int]:
    """(the planned units of ``out`` that are not finished, how many units its sweeps planned in all)."""
    planned: set[str] = set()
    for path in sorted((Path(out) / PLANS).glob("*.json")):
        try:
            planned.update(json.loads(path.read_text())["units"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"damaged sweep plan {path}: delete it (it only lists the units a sweep set out to "
                            "run)") from None
    return sorted(unit for unit in planned if not is_done(out, unit)), len(planned)


def plans_listing(out: Path, units: list[str]) -> list[Path]:
    """The plan files of ``out`` that list any of ``units``."""
    wanted = set(units)
    return [path for path in sorted((Path(out) / PLANS).glob("*.json"))
            if wanted & set(json.loads(path.read_text()).get("units", []))]


def run_sweep(
    configs: Sequence[Any],
    run_unit: Callable[[Any], UnitResult],
    out: str | Path,
    *,
    key: Callable[[Any], str] = unit_id,
    backend: Backend = "local",
    ray_address: str | None = None,
    ray_options: dict[str, Any] | None = None,
    slurm: dict[str, Any] | None = None,
    progress: bool = True,
) -> SweepReport:
    """Run every config whose unit is not finished; write each result to ``<out>/<key(config)>/``.

    ``key`` gives a config's unit id (default: slug + sha256 of its canonical JSON). ``ray_options`` go to
    ``ray.remote`` (e.g. ``{"num_gpus": 1}``); ``slurm`` to submitit's ``update_parameters`` (plus an optional
    ``"cluster"``: "slurm", "local" or "debug", and ``"folder"`` for its logs, default ``<out>/.submitit``).
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown sweep backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if slurm is not None and not isinstance(slurm, dict):
        raise UserError(f"sweep `slurm` must be a mapping of submitit's parameters, not {slurm!r}: e.g. "
                        "{slurm_partition: gpu, timeout_min: 60}")
    out = check_output_dir(out)
    created = not out.exists()
    pending, finished = plan(configs, out, key)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    report = SweepReport(out=out, skipped=finished)
    if not pending:
        return report
    plan_file = write_plan(out, [unit for unit, _ in pending] + finished)
    runner = {"local": _run_local, "ray": _run_ray, "slurm": _run_slurm}[backend]
    options = {"ray": {"address": ray_address, "options": ray_options}, "slurm": {"slurm": slurm}}.get(backend, {})
    try:
        with _progress(progress) as bar:
            task = bar.add_task("sweep", total=len(pending) + len(finished), completed=len(finished), unit="")
            runner(pending, run_unit, out, report, bar, task, **options)
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):  # Ctrl-C, or SIGINT from a scheduler: say where things stand
            done = len(report.ran) + len(report.by_others) + len(finished)
            jobs = ("; its SLURM jobs keep running and writing their units (scancel stops them)"
                    if backend == "slurm" else "")
            print(f"interrupted: {done} of {len(pending) + len(finished)} units are finished in {out}{jobs}; rerun "
                  "the same command to resume (finished units are skipped)", file=sys.stderr, flush=True)
        if plan_file is not None and not report.ran:  # failed before writing any unit: no trace of this call
            plan_file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                plan_file.parent.rmdir()  # if no other plan is there
        if created and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise
    if report.failed:
        first_unit, first_error = next(iter(report.failed.items()))
        raise RuntimeError(f"{len(report.failed)} of {len(pending)} units failed; the others were written. "
                           f"First: {first_unit}: {first_error}") from report.errors[first_unit]
    return report


def _finish(report: SweepReport, bar: Progress, task: Any, unit: str, error: BaseException | None) -> None:
    if error is None:
        report.ran.append(unit)
    else:
        report.failed[unit] = f"{type(error).__name__}: {error}"
        report.errors[unit] = error
    bar.update(task, advance=1, unit=unit)
    log_line(bar, f"{unit}: {'done' if error is None else 'failed: ' + report.failed[unit]}", task)


@contextlib.contextmanager
def _locked(out: Path, unit: str, wait: bool = False):
    fd = lock_unit(out, unit, wait=wait)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            unlock_unit(out, unit, fd)


def _run_local(pending: list, run_unit: Callable, out: Path, report: SweepReport, bar: Progress, task: Any) -> None:
    busy = []  # units another process holds: waited for once ours are done
    for unit, config in pending:
        with _locked(out, unit) as held:
            if not held:
                busy.append((unit, config))
                continue
            _run_held(unit, config, run_unit, out, report, bar, task)
    for unit, config in busy:
        bar.update(task, unit=f"waiting for {unit} ({lock_holder(out, unit) or 'another process'})")
        with _locked(out, unit, wait=True):
            _run_held(unit, config, run_unit, out, report, bar, task)


def _run_held(unit: str, config: Any, run_unit: Callable, out: Path, report: SweepReport, bar: Progress,
              task: Any) -> None:
    """Run a unit whose lock we hold, unless another process finished it before we got the lock."""
    bar.update(task, unit=unit)
    _count(report, bar, task, unit, _run_unless_done(run_unit, out, unit, config))


def _run_unless_done(run_unit: Callable, out: Path, unit: str, config: Any) -> bool:
    """Run and write a unit whose lock is held; False where another process finished it first."""
    if is_done(out, unit):
        return False
    result, wall_s = timed_run(run_unit, config)
    _write(Path(out), unit, config, result, wall_s)
    return True


def _count(report: SweepReport, bar: Progress, task: Any, unit: str, ran: bool) -> None:
    """A unit that ran here, or one another process finished first."""
    if ran:
        _finish(report, bar, task, unit, None)
    else:
        report.by_others.append(unit)
        bar.update(task, advance=1, unit=unit)
        log_line(bar, f"{unit}: finished by another process", task)


def _run_ray(pending: list, run_unit: Callable, out: Path, report: SweepReport, bar: Progress, task: Any,
             address: str | None, options: dict[str, Any] | None) -> None:
    ray = _require("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, TimeoutError, ValueError) as err:
            raise UserError(f"cannot start or reach Ray at {address or 'this machine'} ({first_line(err)}): check "
                            "ray_address (host:port of a running cluster, `ray start --head`), or drop it") from None
    try:
        remote = ray.remote(**options)(timed_run) if options else ray.remote(timed_run)
        refs = {remote.remote(run_unit, config): (unit, config) for unit, config in pending}
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            unit, config = refs.pop(ready[0])
            try:
                result, wall_s = ray.get(ready[0])
            except Exception as err:  # the unit failed on its worker: keep going, report at the end
                if (bad_input := worker_user_error(err)) is not None:
                    raise bad_input from None
                _finish(report, bar, task, unit, err)
                continue
            _write(out, unit, config, result, wall_s)
            _finish(report, bar, task, unit, None)
    finally:
        if started_here:
            ray.shutdown()


def first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def worker_user_error(err: BaseException) -> UserError | None:
    """The bad input behind a unit's failure on a worker, as its own one line: Ray wraps the UserError with the
    worker's traceback (the original is ``err.cause``), submitit keeps only the remote traceback's text."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, UserError):
        return UserError(str(cause))
    if isinstance(err, UserError) and cause is None:
        return err
    # the remote traceback's last exception line: a UserError merely chained into another failure does not count
    raised = re.findall(r"^([\w.]+(?:Error|Exception)): (.+)$", str(err), flags=re.MULTILINE)
    return UserError(raised[-1][1].strip()) if raised and raised[-1][0] == "iclgd.errors.UserError" else None


def run_and_write(run_unit: Callable, out: Path, pending_unit: tuple[str, Any]) -> bool:
    """On a SLURM node: run one unit and write it into the shared results folder itself, under its lock, so that a
    driver killed while jobs run loses none of them (a rerun skips what they wrote). False: another process had
    finished it."""
    unit, config = pending_unit
    with _locked(Path(out), unit, wait=True):
        return _run_unless_done(run_unit, out, unit, config)


def _run_slurm(pending: list, run_unit: Callable, out: Path, report: SweepReport, bar: Progress, task: Any,
               slurm: dict[str, Any] | None) -> None:
    submitit = _require("submitit", "slurm")
    parameters = dict(slurm or {})
    logs = out / ".submitit"
    made_logs = not logs.exists()
    folder = parameters.pop("folder", logs / "%j")
    cluster = parameters.pop("cluster", None)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        if parameters:
            executor.update_parameters(**parameters)
    except (NameError, ValueError, TypeError, RuntimeError) as err:
        if made_logs:
            shutil.rmtree(logs, ignore_errors=True)
        raise UserError(f"bad `slurm` settings ({first_line(err)}): use submitit's parameters, e.g. "
                        "{slurm_partition: gpu, timeout_min: 60}") from None
    if cluster is None and executor.cluster != "slurm":  # submitit falls back to this machine without a word
        warn(f"no SLURM here (no sbatch found): submitit runs {len(pending)} unit(s) on this machine "
             f"({executor.cluster} executor); set `cluster: local` in `slurm:` to say that is meant")
    jobs = executor.map_array(partial(run_and_write, run_unit, out), pending)
    units = {job.job_id: pair for job, pair in zip(jobs, pending, strict=True)}
    for job in submitit.helpers.as_completed(jobs):
        unit, config = units[job.job_id]
        try:
            ran = job.result()
        except Exception as err:  # the unit failed on its node: keep going, report at the end
            if (bad_input := worker_user_error(err)) is not None:
                for other in jobs:  # the sweep stops here: its other jobs are not left running uncollected
                    with contextlib.suppress(Exception):
                        other.cancel(check=False)
                raise bad_input from None
            _finish(report, bar, task, unit, err)
            continue
        _count(report, bar, task, unit, ran)
