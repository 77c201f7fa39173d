"""The learning-rate search's cost: a compare that searches vs the same compare with the chosen lr given.

`iclgd compare` (SmolLM2-135M where `iclgd models fetch` cached it, else its shape with random weights on a
synthetic task; k = 16, 100 eval rows, Dai's GD) as whole processes, one after the other, on each task
(synthetic-sentiment and vader-movie):
  1. with ``--lr-search halving`` (successive halving on 8 half-decade points, batched trajectories), then with
     ``--lr`` set to the lr it chose;
  2. with ``--grid``: the default grid search too (Dai's 36 points, raced best first on the held-out rows), then
     with ``--lr`` set to the lr it chose.
A first small compare warms the page cache and the model's sha256 cache, so no timed process pays for them.
Reported: wall seconds of each, search / given (target, issue 11: <= 2x), the chosen lrs, GD's eval accuracy,
each unit's "lr_s" (the search alone) and each process's peak memory, from the unit records.

Run: python -m benchmarks.bench_lr_search [--grid] [--tasks synthetic-sentiment,vader-movie] [--shots 16] [--eval 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import target


def _model(folder: Path) -> tuple[str, str, list[str]]:
    """(model, where its weights came from, extra compare arguments); a random-weight model is written to
    ``folder``."""
    from benchmarks.bench_compare import cached_real_weights, make_task, smollm2_shape

    if cached_real_weights("smollm2-135m") is not None:
        return "smollm2-135m", "real weights", []
    task = make_task(folder / "task", n_pool=264)
    return str(smollm2_shape(folder / "smollm2-shape")), "SmolLM2-135M's shape, random weights", ["--task", str(task)]


def _compare(args: list[str], out: Path) -> tuple[float, dict]:
    """Wall seconds of one `iclgd compare` process and its unit record."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "iclgd", "compare", *args, "--out", str(out)],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"iclgd compare {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    (record,) = [json.loads(p.read_text()) for p in out.glob("*/record.json")]
    return seconds, record


def _accuracy(out: Path) -> tuple[float, float, float]:
    """GD's accuracy on the eval rows of the one unit in ``out``, with its 95 % bootstrap interval over the rows."""
    import duckdb

    (metrics,) = out.glob("*/metrics.parquet")
    query = ("SELECT value, ci_low, ci_high FROM read_parquet(?) "
             "WHERE method = 'gd' AND metric = 'accuracy' AND layer IS NULL")
    return duckdb.execute(query, [str(metrics)]).fetchone()


def _shown(accuracy: tuple[float, float, float]) -> str:
    return f"{accuracy[0]:.2f} [{accuracy[1]:.2f}, {accuracy[2]:.2f}]"


def one_task(task: str, common: list[str], grid: bool, tmp: Path) -> dict:
    """The figures of one task: each search's compare against a compare given the lr that search chose."""
    figures: dict = {}
    searches = ("halving", "grid") if grid else ("halving",)
    for search in searches:
        seconds, record = _compare([*common, "--lr-search", search], tmp / f"{task}-{search}")
        given_s, given = _compare([*common, "--lr", repr(record["lr"])], tmp / f"{task}-{search}-given")
        searched_out, given_out = tmp / f"{task}-{search}", tmp / f"{task}-{search}-given"
        figures[search] = {
            "search_s": round(seconds, 1), "given_s": round(given_s, 1),
            "search_over_given": round(seconds / given_s, 2), "chosen_lr": record["lr"],
            "search_only_s": record["timings"]["lr_s"], "gd_accuracy": _accuracy(searched_out),
            "given_gd_accuracy": _accuracy(given_out), "points_trained": len(record["lr_search"]["scores"]),
            "rows_scored": sum(record["lr_search"]["rows"].values()),
            "peak_mib": record["peak_memory_mb"], "given_peak_mib": given["peak_memory_mb"]}
        f = figures[search]
        print(f"  {task}, {search:7s} search: {seconds:6.1f} s, with --lr {record['lr']:g} given {given_s:6.1f} s -> "
              f"{seconds / given_s:.2f}x (target <= 2x); search {f['search_only_s']:.1f} s, GD accuracy "
              f"{_shown(f['gd_accuracy'])}; {f['points_trained']} points trained, {f['rows_scored']} held-out rows "
              f"scored (the exhaustive grid: 36, {36 * 200}); peak {f['peak_mib']:.0f} / {f['given_peak_mib']:.0f} MiB",
              flush=True)
    if grid:
        figures["same_lr"] = figures["halving"]["chosen_lr"] == figures["grid"]["chosen_lr"]
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", action="store_true", help="also time the grid search (Dai's 36 points)")
    parser.add_argument("--tasks", default="synthetic-sentiment,vader-movie")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--eval", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iclgd-bench-lr-") as tmp:
        tmp = Path(tmp)
        model, source, extra = _model(tmp / "model")
        tasks = args.tasks.split(",") if not extra else ["bench (synthetic)"]
        figures: dict = {"model": model, "weights": source, "shots": args.shots, "eval_rows": args.eval,
                         "load_average_before": [round(x, 2) for x in os.getloadavg()], "tasks": {}}
        print(f"{model} ({source}), k = {args.shots}, {args.eval} eval rows")
        # warm-up: the first process reads the model from disk and hashes it; every timed one then finds it cached
        _compare(["--model", model, "--task", tasks[0] if not extra else extra[1], "-k", "1", "--eval-size", "4",
                  "--method", "gd", "--lr", "1e-3"], tmp / "warm-up")
        for task in tasks:
            common = ["--model", model, "-k", str(args.shots), "--eval-size", str(args.eval), "--method", "gd",
                      *(extra or ["--task", task])]
            figures["tasks"][task] = one_task(task, common, args.grid, tmp)
    figures["targets"] = [target(f"compare with the {search} lr search / with its lr given: {task}",
                                 f[search]["search_over_given"], at_most=2)
                          for task, f in figures["tasks"].items() for search in ("halving", "grid") if search in f]
    return figures


if __name__ == "__main__":
    main()
