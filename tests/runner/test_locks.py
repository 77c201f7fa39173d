"""Unit locks: concurrent sweeps on one folder share the units, each unit runs once; a dead holder frees it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from iclgd.runner import is_done, run_sweep, unit_id
from iclgd.runner.store import LOCK_PREFIX, lock_holder, lock_unit, unlock_unit
from tests.runner.helpers import fake_result

ROOT = Path(__file__).resolve().parents[2]

# Waits for the go file (both processes start together), then runs six slow fake units, logging each run.
SWEEP = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from iclgd.runner import run_sweep
    from tests.runner.helpers import fake_result

    out, log, go = sys.argv[1:4]
    def run(config):
        with open(log, "a") as f:
            f.write(f"{config['seed']} {os.getpid()}\\n")
        time.sleep(0.4)
        return fake_result(config)

    while not Path(go).exists():
        time.sleep(0.01)
    report = run_sweep([{"task": "sst2", "seed": s} for s in range(6)], run, out, progress=False)
    print(len(report.ran), len(report.skipped), len(report.by_others))
""")


def test_two_sweeps_on_one_folder_run_every_unit_once(tmp_path):
    out, log, go = tmp_path / "out", tmp_path / "runs.log", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP, str(out), str(log), str(go)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    results = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in results]
    runs = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert runs == Counter({str(seed): 1 for seed in range(6)})  # every unit ran exactly once
    ran = [int(stdout.split()[0]) for stdout, _ in results]
    assert sum(ran) == 6 and min(ran) >= 1, ran  # and the work was shared
    pids = {line.split()[1] for line in log.read_text().splitlines()}
    assert pids == {str(proc.pid) for proc in procs}
    assert all(is_done(out, unit_id({"task": "sst2", "seed": s})) for s in range(6))
    assert not [p.name for p in out.iterdir() if p.name.startswith((LOCK_PREFIX, ".tmp-"))]


def test_lock_is_exclusive_and_freed_by_a_dead_holder(tmp_path):
    fd = lock_unit(tmp_path, "unit-a")
    assert fd is not None and lock_holder(tmp_path, "unit-a") == f"pid {os.getpid()} on {os.uname().nodename}"
    script = ("import sys; from iclgd.runner.store import lock_unit; "
              "print(lock_unit(sys.argv[1], 'unit-a') is None)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    held = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert held.stdout.strip() == "True"  # another process cannot take it
    unlock_unit(tmp_path, "unit-a", fd)
    assert not (tmp_path / f"{LOCK_PREFIX}unit-a").exists()
    # a process killed while holding a lock leaves the file, not the lock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from iclgd.runner.store import lock_unit; "
                               "lock_unit(sys.argv[1], 'unit-b'); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    assert lock_unit(tmp_path, "unit-b") is None
    holder.kill()
    holder.wait()
    assert (tmp_path / f"{LOCK_PREFIX}unit-b").exists()
    fd = lock_unit(tmp_path, "unit-b")
    assert fd is not None
    unlock_unit(tmp_path, "unit-b", fd)


def test_a_unit_locked_elsewhere_is_waited_for_then_not_rerun(tmp_path):
    """The holder finishes the unit while this sweep runs the others: it is counted as run by another process."""
    configs = [{"task": "sst2", "seed": s} for s in (1, 2)]
    busy = unit_id(configs[0])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    script = textwrap.dedent("""
        import sys, time
        from iclgd.runner.store import lock_unit, unlock_unit, write_unit
        from tests.runner.helpers import fake_result
        out, unit = sys.argv[1:3]
        fd = lock_unit(out, unit)
        print("held", flush=True)
        time.sleep(1.5)
        write_unit(out, unit, {"task": "sst2", "seed": 1}, fake_result({"task": "sst2", "seed": 1}))
        unlock_unit(out, unit, fd)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), busy], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    seeds = []

    def run(config):
        seeds.append(config["seed"])
        return fake_result(config)

    report = run_sweep(configs, run, tmp_path, progress=False)
    holder.wait(timeout=60)
    assert seeds == [2] and report.ran == [unit_id(configs[1])] and report.by_others == [busy]
    assert is_done(tmp_path, busy)
