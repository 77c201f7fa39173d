"""The benchmarks' own plumbing: per-process and per-phase peak memory, targets, and run_all's bookkeeping."""

import json
import sys
from pathlib import Path

import pytest

from benchmarks import run_all
from benchmarks.measure import peak_mib, reset_peak, rss_mib, run_child, target

ALLOCATE = "import numpy as np; a = np.ones({} * 2**20 // 8); print(a.sum())"


def test_a_child_peak_counts_what_the_child_allocated():
    _, big, done = run_child([sys.executable, "-c", ALLOCATE.format(400)])
    assert done.returncode == 0 and float(done.stdout) == 400 * 2**20 // 8
    assert big > 400


def test_a_benchmark_process_reports_its_own_peak_across_phase_resets(tmp_path):
    """run_all's child writes its own peak: wait4's would be at least run_all's RSS at the spawn (Linux carries the
    high-water mark across exec), and a phase's reset must not hide an earlier phase's peak."""
    code = ("import json, sys; import numpy as np; from benchmarks import measure;"
            "a = np.ones(300 * 2**20 // 8); a.sum(); del a; measure.reset_peak();"
            "print(json.dumps([measure.peak_mib(), measure.process_peak_mib()]))")
    done = run_child([sys.executable, "-c", code])[2]
    phase, process = json.loads(done.stdout)
    assert process > 300 and (phase < process - 250 or not Path("/proc/self/clear_refs").exists())


def test_a_phase_peak_is_its_own_once_reset():
    import numpy as np

    a = np.ones(300 * 2**20 // 8)
    del a
    assert peak_mib() >= rss_mib() + 250
    if not reset_peak():
        pytest.skip("this kernel refuses to reset the peak RSS")
    assert peak_mib() < rss_mib() + 50


def test_targets_say_whether_they_were_met():
    assert target("x", 1.2, at_most=1.5) == {"what": "x", "value": 1.2, "target": "<= 1.5", "met": True}
    assert not target("x", 14.9, at_least=15)["met"]


def test_each_benchmark_gets_only_its_own_flags():
    args = run_all.main.__globals__["argparse"].Namespace(random=True, reencode=10, grid=True)
    assert run_all.arguments("bench_compare", args) == ["--random", "--reencode", "10"]
    assert run_all.arguments("bench_lr_search", args) == ["--grid"]
    assert run_all.arguments("bench_lm_eval", args) == []


def test_a_failing_benchmark_is_recorded_and_the_others_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    monkeypatch.setattr(run_all, "BENCHMARKS", ("bench_linreg", "bench_broken"))

    def child(command, capture=True):
        name, out = command[command.index("--one") + 1:command.index("--one") + 3]
        if name == "bench_broken":
            return 1.0, 10.0, type("Done", (), {"returncode": 1})()
        out_path = tmp_path / "child.json"
        out_path.write_text(json.dumps({"steps": 3, "targets": [target("t", 2.0, at_most=1.0)]}))
        import shutil

        shutil.copy(out_path, out)
        return 2.0, 20.0, type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(run_all, "run_child", child)
    assert run_all.main(["--only", "bench_linreg,bench_broken"]) == 1
    figures = json.loads((tmp_path / "results" / "benchmarks.json").read_text())
    assert figures["bench_linreg"]["steps"] == 3 and figures["bench_linreg"]["process_s"] == 2.0
    assert figures["bench_broken"] == {"error": 1, "process_s": 1.0}
    assert "MISSED t: 2" in capsys.readouterr().out


def test_an_unknown_benchmark_is_a_usage_error():
    with pytest.raises(SystemExit) as err:
        run_all.main(["--only", "bench_nothing"])
    assert err.value.code == 2


def test_a_child_passes_its_flags_to_the_benchmark_untouched(tmp_path, monkeypatch):
    """run_all's own --grid, --random and --reencode reach the benchmark: the child does not parse them itself."""
    seen = {}

    class Module:
        @staticmethod
        def main(argv):
            seen["argv"] = argv
            return {"ok": True}

    monkeypatch.setattr(run_all.importlib, "import_module", lambda name: Module)
    out = tmp_path / "figures.json"
    assert run_all.main(["--one", "bench_compare", str(out), "--random", "--reencode", "10"]) == 0
    figures = json.loads(out.read_text())
    assert seen["argv"] == ["--random", "--reencode", "10"] and figures["ok"] and figures["process_peak_mib"] > 0


def test_the_readme_table_shows_each_ratio_beside_its_target(capsys, tmp_path):
    from benchmarks import table

    figures = {
        "bench_lr_search": {"tasks": {"vader-movie": {
            "halving": {"search_s": 80.0, "given_s": 42.0, "search_over_given": 1.9, "chosen_lr": 0.003},
            "grid": {"search_s": 200.0, "given_s": 42.0, "search_over_given": 4.76, "chosen_lr": 0.02}}}},
        "bench_lm_eval": {"task": "vader-movie", "docs": 200, "lm_eval": "0.4.13", "shots": {"16": {
            "lm_eval_s": 300.0, "iclgd_s": 20.0, "speedup": 15.0, "lm_eval_peak_mib": 2000.0, "iclgd_peak_mib": 900.0}},
            "targets": [target("ICL scoring, lm-eval / iclgd, 16 shots", 15.0, at_least=15)], "process_peak_mib": 90.0},
    }
    (tmp_path / "b.json").write_text(json.dumps(figures))
    table.main([str(tmp_path / "b.json")])
    text = capsys.readouterr().out
    assert "| 80.0 s vs 42.0 s: **1.90x** (lr 0.003) | <= 2: met |" in text
    assert "**4.76x** (lr 0.02) | <= 2: **missed** |" in text
    assert "300.0 s vs 20.0 s: **15.0x**; peak 2 000 MiB vs 900 MiB | >= 15: met |" in text
    assert "bench_lm_eval 90 MiB" in text


def test_the_gpu_benchmark_runs_every_shape_end_to_end(tmp_path):
    """bench_gpu waits for a session lent a GPU: its smoke run (each shape cut to 2 layers, on the CPU) keeps every
    path it takes working, so that session's one device call measures rather than debugs."""
    from benchmarks import bench_gpu

    figures = bench_gpu.main(["--device", "cpu", "--tiny", "--eval", "2", "--shots", "4", "--repeats", "1",
                              "--skip-finetune", "--json", str(tmp_path / "gpu.json")])
    assert sorted(figures["shapes"]) == sorted(bench_gpu.MODELS)
    for name, shape in figures["shapes"].items():
        assert shape["prefix_tokens"] > 4 * 50 and shape["compare_phases_s"]["lr_s"] >= 0, name
        assert all(shape[key] > 0 for key in ("icl_scoring_float32_s", "icl_scoring_bfloat16_s", "compare_float32_s",
                                              "finetune_gd_one_lr_s", "trajectories_36_lrs_s")), name
    assert json.loads((tmp_path / "gpu.json").read_text())["shapes"].keys() == figures["shapes"].keys()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU machine runs it")
def test_the_gpu_benchmark_without_a_gpu_says_so():
    from benchmarks import bench_gpu

    with pytest.raises(SystemExit, match="no CUDA device"):
        bench_gpu.main(["--device", "cuda"])
