"""A real compare sweep on the cluster backends, run locally: a local Ray cluster (ray.init() in this process)
and SLURM through submitit's local executor. Each writes the same units with the same values as the in-process
sweep: the backends move the work, not the results."""

import importlib.util
import math

import pyarrow.parquet as pq
import pytest
import yaml

from iclgd.experiments.sweep import run_sweep_file
from iclgd.models.tiny import save_tiny_model
from iclgd.tasks import FIXTURES_DIR


def _sweep(tmp_path, model, backend: str, extra: dict | None = None):
    spec = {"base": {"model": str(model), "task": "sst2", "data_dir": str(FIXTURES_DIR), "shots": 4, "eval_size": 6,
                     "lr": 1e-2, "methods": ["gd", "lcgd"], "kendall_examples": 3, "batch_size": 4},
            "grid": {"seed": [1, 2]}, "out": str(tmp_path / backend), "backend": backend, **(extra or {})}
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(spec))
    report, configs = run_sweep_file(path, progress=False)
    assert sorted(report.ran) == sorted(c.unit_id() for c in configs) and not report.failed
    return {unit: pq.read_table(tmp_path / backend / unit / "metrics.parquet").to_pylist() for unit in report.ran}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sweeps")
    model = save_tiny_model("gpt2", tmp_path / "gpt2")
    return tmp_path, model, _sweep(tmp_path, model, "local")


def _nan_free(rows: list[dict]) -> list[dict]:
    return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows]


def _same(results: dict, reference: dict) -> None:
    assert results.keys() == reference.keys()
    for unit, rows in reference.items():
        assert _nan_free(results[unit]) == _nan_free(rows), unit  # bit for bit: same code, same CPU


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'iclgd[cluster]')")
def test_ray_backend_writes_what_the_in_process_sweep_writes(in_process):
    """The sweep starts (and stops) a local Ray cluster itself, as on a laptop. (Ray's workers run at nice 15: on a
    busy machine their imports of torch take minutes.)"""
    tmp_path, model, reference = in_process
    _same(_sweep(tmp_path, model, "ray"), reference)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="submitit not installed")
def test_slurm_backend_with_submitits_local_executor_writes_what_the_in_process_sweep_writes(in_process):
    tmp_path, model, reference = in_process
    _same(_sweep(tmp_path, model, "slurm", {"slurm": {"cluster": "local", "timeout_min": 10}}), reference)
