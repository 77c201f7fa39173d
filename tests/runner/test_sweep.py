import importlib.util
import json
import socket
import sys

import pytest

from iclgd.errors import UserError
from iclgd.runner import is_done, run_sweep, unit_id
from tests.runner import helpers
from tests.runner.helpers import fake_result

CONFIGS = [{"task": "sst2", "k": 4, "seed": seed} for seed in (1, 2, 3)]


class Counter:
    """A run function that records which seeds it ran."""

    def __init__(self, fail_seed: int | None = None):
        self.seeds: list[int] = []
        self.fail_seed = fail_seed

    def __call__(self, config):
        if config["seed"] == self.fail_seed:
            raise ValueError("unit failed on purpose")
        self.seeds.append(config["seed"])
        return fake_result(config)


def test_local_sweep_writes_every_unit_then_skips_them(tmp_path):
    run = Counter()
    report = run_sweep(CONFIGS + CONFIGS[:1], run, tmp_path, progress=False)  # a duplicate runs once
    assert run.seeds == [1, 2, 3]
    assert report.ran == [unit_id(c) for c in CONFIGS] and report.skipped == []
    assert all(is_done(tmp_path, unit_id(c)) for c in CONFIGS)
    record = json.loads((tmp_path / unit_id(CONFIGS[0]) / "record.json").read_text())
    assert record["config"] == CONFIGS[0]
    assert record["timings"]["unit_wall_s"] >= 0

    again = Counter()
    report = run_sweep(CONFIGS + [{"task": "sst2", "k": 4, "seed": 4}], again, tmp_path, progress=False)
    assert again.seeds == [4]
    assert len(report.skipped) == 3 and len(report.ran) == 1


def test_a_failing_unit_stops_the_local_sweep_and_resume_finishes_it(tmp_path):
    with pytest.raises(ValueError, match="on purpose"):
        run_sweep(CONFIGS, Counter(fail_seed=2), tmp_path, progress=False)
    assert [is_done(tmp_path, unit_id(c)) for c in CONFIGS] == [True, False, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_plans", unit_id(CONFIGS[0])]  # nothing half-written
    resumed = Counter()
    run_sweep(CONFIGS, resumed, tmp_path, progress=False)
    assert resumed.seeds == [2, 3]


def test_an_interrupted_sweep_says_how_far_it_got_and_how_to_resume(tmp_path, capsys):
    def interrupted_at_seed_3(config):
        if config["seed"] == 3:
            raise KeyboardInterrupt
        return fake_result(config)

    run_sweep(CONFIGS[:1], Counter(), tmp_path, progress=False)  # one unit finished by an earlier call
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(CONFIGS, interrupted_at_seed_3, tmp_path, progress=False)
    err = capsys.readouterr().err
    assert err == (f"interrupted: 2 of 3 units are finished in {tmp_path}; rerun the same command to resume "
                   "(finished units are skipped)\n")
    resumed = Counter()
    run_sweep(CONFIGS, resumed, tmp_path, progress=False)
    assert resumed.seeds == [3]


def test_sweep_cleans_tmp_folders_of_dead_writers(tmp_path):
    stale = tmp_path / f".tmp-{unit_id(CONFIGS[0])}-{socket.gethostname()}-999999999"
    stale.mkdir()
    (stale / "metrics.parquet").write_bytes(b"partial")
    run_sweep(CONFIGS[:1], Counter(), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_plans", unit_id(CONFIGS[0])]


def test_custom_key_and_damaged_existing_unit(tmp_path):
    run_sweep(CONFIGS[:1], Counter(), tmp_path, key=lambda c: f"seed{c['seed']}", progress=False)
    assert is_done(tmp_path, "seed1")
    (tmp_path / "seed1" / "predictions.parquet").unlink()
    with pytest.raises(UserError, match="seed1.*delete that folder"):
        run_sweep(CONFIGS[:1], Counter(), tmp_path, key=lambda c: f"seed{c['seed']}", progress=False)


def test_run_function_must_return_a_result(tmp_path):
    with pytest.raises(TypeError, match="UnitResult"):
        run_sweep(CONFIGS[:1], lambda config: {"metrics": []}, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_shows_units_done(tmp_path, capsys):
    run_sweep(CONFIGS[:2], Counter(), tmp_path, progress=True)
    assert "2/2" in capsys.readouterr().out


def test_a_sweep_logged_to_a_file_says_each_unit_as_it_finishes(tmp_path, capsys):
    """Not a terminal (a log, a batch job's output): the bar cannot redraw, so each finished unit is a line."""
    run_sweep(CONFIGS[:2], Counter(), tmp_path, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    units = [unit_id(c) for c in CONFIGS[:2]]
    assert [line.split("] ", 1)[1] for line in lines] == [f"{u}: done" for u in units]
    assert lines[0].startswith("[1/2, ") and lines[1].startswith("[2/2, ")
    run_sweep(CONFIGS[:2], Counter(), tmp_path / "quiet", progress=False)  # --no-progress: quiet
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]


@pytest.mark.parametrize("backend,module", [("ray", "ray"), ("slurm", "submitit")])
def test_missing_cluster_package_names_the_extra(tmp_path, monkeypatch, backend, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(UserError, match=r"pip install 'iclgd\[cluster\]'"):
        run_sweep(CONFIGS, Counter(), tmp_path, backend=backend, progress=False)
    assert not any(p.name.startswith(("sst2", ".tmp")) for p in tmp_path.iterdir())


def test_unknown_backend(tmp_path):
    with pytest.raises(UserError, match="local, ray, slurm"):
        run_sweep(CONFIGS, Counter(), tmp_path, backend="dask", progress=False)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="submitit not installed")
def test_slurm_backend_with_submitit_local_executor(tmp_path):
    configs = CONFIGS + [{"task": "sst2", "k": 4, "seed": 9, "fail": True}]
    with pytest.raises(RuntimeError, match="1 of 4 units failed"):
        run_sweep(configs, helpers.run_fake, tmp_path, backend="slurm", slurm={"cluster": "local", "timeout_min": 5},
                  progress=False)
    assert [is_done(tmp_path, unit_id(c)) for c in configs] == [True, True, True, False]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")
def test_ray_backend_local_cluster(tmp_path):
    configs = CONFIGS + [{"task": "sst2", "k": 4, "seed": 9, "fail": True}]
    with pytest.raises(RuntimeError, match="1 of 4 units failed"):
        run_sweep(configs, helpers.run_fake, tmp_path, backend="ray", ray_options={"num_cpus": 1}, progress=False)
    assert [is_done(tmp_path, unit_id(c)) for c in configs] == [True, True, True, False]


def test_a_sweep_records_its_plan_so_a_report_can_name_the_missing_units(tmp_path):
    from iclgd.runner.sweep import missing_units

    with pytest.raises(ValueError, match="on purpose"):
        run_sweep(CONFIGS, Counter(fail_seed=2), tmp_path, progress=False)
    assert missing_units(tmp_path) == ([unit_id(CONFIGS[1]), unit_id(CONFIGS[2])], 3)  # a local sweep stops there
    run_sweep(CONFIGS, Counter(), tmp_path, progress=False)
    assert missing_units(tmp_path) == ([], 3)
    run_sweep(CONFIGS[:1], Counter(), tmp_path, progress=False)  # nothing to run: no new plan
    assert len(list((tmp_path / "_plans").iterdir())) == 1
    (tmp_path / "_plans" / "x.json").write_text("{")
    with pytest.raises(UserError, match="damaged sweep plan"):
        missing_units(tmp_path)


def test_bad_cluster_settings_are_one_line_before_anything_runs(tmp_path, monkeypatch):
    """A `slurm:` that is not a mapping, a parameter submitit does not know, an unreachable Ray: one UserError each,
    and no log folder left behind."""
    configs = [{"task": "sst2", "k": 4, "seed": 1}]
    with pytest.raises(UserError, match="`slurm` must be a mapping"):
        run_sweep(configs, fake_result, tmp_path / "a", backend="slurm", slurm="gpu", progress=False)
    if importlib.util.find_spec("submitit") is not None:
        with pytest.raises(UserError, match="bad `slurm` settings"):
            run_sweep(configs, fake_result, tmp_path / "b", backend="slurm", slurm={"slurm_partitionn": "gpu"},
                      progress=False)
        assert not (tmp_path / "b" / ".submitit").exists()
    if importlib.util.find_spec("ray") is not None:
        import ray

        def unreachable(**kwargs):
            raise ConnectionError("Could not find any running Ray instance")

        monkeypatch.setattr(ray, "init", unreachable)
        with pytest.raises(UserError, match=r"cannot start or reach Ray at 10\.0\.0\.1:6379 \(Could not find"):
            run_sweep(configs, fake_result, tmp_path / "c", backend="ray", ray_address="10.0.0.1:6379", progress=False)


def test_bad_input_on_a_worker_comes_back_as_its_own_line():
    """Ray re-raises a worker's UserError wrapped with the worker's traceback (the original as ``.cause``); submitit
    hands back the remote traceback as text. Either becomes the UserError's one line."""
    from iclgd.runner.sweep import worker_user_error

    class RayTaskErrorLike(Exception):
        def __init__(self, cause):
            super().__init__("ray::timed_run() (pid=1)\n  File ...\niclgd.errors.UserError: x")
            self.cause = cause

    assert str(worker_user_error(RayTaskErrorLike(UserError("task 'x' is unknown: see iclgd tasks")))) == (
        "task 'x' is unknown: see iclgd tasks")
    remote = RuntimeError("Job (task=0) failed during processing with trace:\nTraceback ...\n"
                          "iclgd.errors.UserError: label word ' x' is 2 tokens: pick one-token words\n")
    assert str(worker_user_error(remote)) == "label word ' x' is 2 tokens: pick one-token words"
    assert worker_user_error(ValueError("boom")) is None


def test_a_user_error_chained_into_another_failure_is_a_failed_unit():
    from iclgd.runner.sweep import worker_user_error

    chained = RuntimeError("Traceback ...\niclgd.errors.UserError: a bad task\n\nDuring handling of the above "
                           "exception, another exception occurred:\n\nTraceback ...\nValueError: boom\n")
    assert worker_user_error(chained) is None


def test_a_slurm_job_writes_its_unit_itself(tmp_path):
    """On SLURM each job writes its unit into the shared folder, under its lock: a driver killed while jobs run
    loses none of their results, and a job whose unit another sweep finished leaves it alone."""
    from iclgd.runner.sweep import run_and_write

    config = CONFIGS[0]
    unit = unit_id(config)
    assert run_and_write(helpers.run_fake, tmp_path, (unit, config)) is True
    assert is_done(tmp_path, unit)
    assert run_and_write(helpers.run_fake, tmp_path, (unit, config)) is False


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="submitit not installed")
def test_slurm_without_slurm_says_the_units_run_here(tmp_path, capsys, monkeypatch):
    """Without sbatch submitit silently runs the jobs on this machine: the sweep says so, unless `cluster: local`
    asked for it."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no sbatch, whatever this machine has
    run_sweep(CONFIGS[:1], helpers.run_fake, tmp_path / "a", backend="slurm", slurm={"timeout_min": 5},
              progress=False)
    assert "no SLURM here (no sbatch found): submitit runs 1 unit(s) on this machine" in capsys.readouterr().err
    run_sweep(CONFIGS[:1], helpers.run_fake, tmp_path / "b", backend="slurm",
              slurm={"cluster": "local", "timeout_min": 5}, progress=False)
    assert "no SLURM" not in capsys.readouterr().err
