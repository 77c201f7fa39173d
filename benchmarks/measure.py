"""What every benchmark measures the same way: a phase's peak memory, a child process's peak, and targets.

Peak memory on CPU is the resident set's high-water mark (``VmHWM``, MiB). A process's mark only rises, so a
phase's own peak needs the mark reset first: Linux resets it on writing 5 to ``/proc/self/clear_refs``. Where that
is refused, :func:`reset_peak` says so and the peak read after it is the process's so far (it says which).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mib(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in {_STATUS}")


_highest_before_resets = 0.0


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel refuses (the peak then keeps
    what came before). The peak reset away still counts in :func:`process_peak_mib`."""
    global _highest_before_resets
    _highest_before_resets = max(_highest_before_resets, peak_mib())
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    """This process's peak RSS since it started or since the last :func:`reset_peak` (MiB)."""
    return round(_status_mib("VmHWM"), 1)


def process_peak_mib() -> float:
    """This process's peak RSS since it started, across resets (MiB); its subprocesses not included."""
    return max(_highest_before_resets, peak_mib())


def rss_mib() -> float:
    """This process's RSS now (MiB)."""
    return round(_status_mib("VmRSS"), 1)


def run_child(command: list[str], env: dict | None = None, *,
              capture: bool = True) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``command`` to its end: (wall seconds, its peak RSS in MiB, its completed process, whose output is
    captured unless ``capture`` is False: then it goes to this process's).

    The peak is ``os.wait4``'s for this child, where ``RUSAGE_CHILDREN`` would give the largest of every child this
    process ever had. It is an upper bound: Linux counts in it the largest of the descendants the child reaped, and
    carries the high-water mark across ``exec``, so it is at least this process's RSS when it spawned the child.
    Spawn from a small process (a benchmark's children have their own peaks, that of a model load and more)."""
    start = time.perf_counter()
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env)
    stdout, stderr = _drain(proc) if capture else ("", "")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, round(usage.ru_maxrss / 1024, 1), subprocess.CompletedProcess(command, proc.returncode,
                                                                                 stdout, stderr)


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """Read both pipes to their end without reaping the child (``communicate`` would wait for it)."""
    out: dict[str, str] = {}

    def read(name: str, stream) -> None:
        out[name] = stream.read()

    threads = [threading.Thread(target=read, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out["out"], out["err"]


def write_figures(path: Path, figures: dict) -> None:
    """A benchmark's figures as indented JSON at ``path`` (its folder made where missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1) + "\n")


def target(what: str, value: float, *, at_most: float | None = None, at_least: float | None = None) -> dict:
    """One target of issue 11 and whether this run met it."""
    met = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    bound = f"<= {at_most:g}" if at_most is not None else f">= {at_least:g}"
    return {"what": what, "value": round(value, 3), "target": bound, "met": bool(met)}
