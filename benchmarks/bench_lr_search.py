"""The learning-rate search's cost: a compare that searches vs the same compare with the chosen lr given.

`iclgd compare` (SmolLM2-135M where `iclgd models fetch` cached it, else a GPT-2-small shape with random weights;
synthetic-sentiment, k = 16, 100 eval rows, Dai's GD) as whole processes, one after the other:
  1. with ``--lr-search halving`` (successive halving on 8 half-decade points, batched trajectories),
  2. with ``--lr`` set to the lr it chose,
  3. with ``--grid``: the default grid search too (Dai's 36 points, raced best first on the held-out rows).
Reported: wall seconds of each, search / given (target, issue 11: <= 2x), the chosen lrs, and each unit's
"lr_s" (the search alone) from its record.

Run: python -m benchmarks.bench_lr_search [--grid] [--task synthetic-sentiment] [--shots 16] [--eval 100]
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


def _model() -> tuple[str, str, list[str]]:
    """(model, where its weights came from, extra compare arguments)."""
    from benchmarks.bench_compare import cached_real_weights, gpt2_small, make_task

    if cached_real_weights("smollm2-135m") is not None:
        return "smollm2-135m", "real weights", []
    folder = Path(tempfile.mkdtemp(prefix="iclgd-bench-lr-"))
    task = make_task(folder / "task", n_pool=264)
    return str(gpt2_small(folder / "gpt2-small")), "GPT-2-small shape, random weights", ["--task", str(task)]


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", action="store_true", help="also time the grid search (Dai's 36 points)")
    parser.add_argument("--task", default="synthetic-sentiment")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--eval", type=int, default=100)
    args, _ = parser.parse_known_args(argv)  # run_all passes every benchmark the same flags
    model, source, extra = _model()
    common = ["--model", model, "--task", args.task, "-k", str(args.shots), "--eval-size", str(args.eval),
              "--method", "gd", *extra]
    figures: dict = {"model": model, "weights": source, "task": args.task if not extra else "bench (synthetic)",
                     "shots": args.shots, "eval_rows": args.eval,
                     "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="iclgd-bench-lr-") as tmp:
        searched_s, searched = _compare([*common, "--lr-search", "halving"], Path(tmp) / "search")
        given_s, given = _compare([*common, "--lr", repr(searched["lr"])], Path(tmp) / "given")
        figures.update(search_s=round(searched_s, 1), given_s=round(given_s, 1),
                       search_over_given=round(searched_s / given_s, 2), chosen_lr=searched["lr"],
                       gd_accuracy=_accuracy(Path(tmp) / "search"), search_only_s=searched["timings"]["lr_s"],
                       search_scores=searched["lr_search"])
        print(f"{model} ({source}), {figures['task']}, k = {args.shots}, {args.eval} eval rows")
        print(f"  compare with the halving search  {searched_s:7.1f} s   (search {searched['timings']['lr_s']:.1f} s, "
              f"chose {searched['lr']:g}, GD accuracy {_shown(figures['gd_accuracy'])})")
        ratio = searched_s / given_s
        print(f"  compare with --lr {searched['lr']:<14g} {given_s:7.1f} s   -> {ratio:.2f}x (target <= 2x)")
        if args.grid:
            grid_s, grid = _compare([*common, "--lr-search", "grid"], Path(tmp) / "grid")
            figures.update(grid_s=round(grid_s, 1), grid_over_given=round(grid_s / given_s, 2), grid_lr=grid["lr"],
                           grid_only_s=grid["timings"]["lr_s"], grid_gd_accuracy=_accuracy(Path(tmp) / "grid"),
                           grid_points_trained=len(grid["lr_search"]["scores"]),
                           grid_rows_scored=sum(grid["lr_search"]["rows"].values()))
            print(f"  compare with the grid search     {grid_s:7.1f} s   -> {grid_s / given_s:.2f}x "
                  f"(search {grid['timings']['lr_s']:.1f} s, chose {grid['lr']:g}, GD accuracy "
                  f"{_shown(figures['grid_gd_accuracy'])}; {figures['grid_points_trained']} of 36 points trained, "
                  f"{figures['grid_rows_scored']} held-out rows scored of {36 * 200})")
    return figures


if __name__ == "__main__":
    main()
