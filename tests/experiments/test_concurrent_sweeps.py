"""Two `iclgd sweep` processes on one results folder (real units: the shipped 76k-parameter LM, 8 eval rows)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[2] / "src" / "iclgd" / "assets" / "icc-gpt2"


@pytest.mark.slow
def test_two_sweeps_share_the_units_and_run_each_once(tmp_path):
    out = tmp_path / "out"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {{model: {MODEL}, task: icc-heldout, eval_size: 8, shots: 4, lr: 0.01, "
                     f"methods: [gd], kendall_examples: 0}}\ngrid: {{seed: [1, 2, 3, 4]}}\nout: {out}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    procs = [subprocess.Popen([sys.executable, "-m", "iclgd", "sweep", str(sweep)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    ran = [int(re.search(r"(\d+) ran, (\d+) already done", stdout).group(1)) for stdout, _ in outputs]
    assert sum(ran) == 4, [stdout[-500:] for stdout, _ in outputs]  # every unit ran once, in one of the two
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*/record.json"))]
    assert len(records) == 4
    assert {r["written_by"]["pid"] for r in records} <= {proc.pid for proc in procs}
    assert not [p.name for p in out.iterdir() if p.name.startswith((".lock-", ".tmp-"))]
