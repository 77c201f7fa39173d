"""Run every benchmark once, each in a fresh process, and write their figures to results/benchmarks.json.

Each benchmark runs alone in its own process, so none inherits another's threads, caches or peak memory, and
one that fails loses no other's figures: the file is rewritten after each, and a failure is recorded as its
error. At the end, every target of issue 11 is listed as met or missed. Exit status 1 when a benchmark failed.

Run: python -m benchmarks.run_all [--random] [--reencode N] [--grid] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import process_peak_mib, run_child

BENCHMARKS = ("bench_compare", "bench_linreg", "bench_finetune", "bench_lr_search", "bench_unembedding",
              "bench_lm_eval")
OUT = Path("results/benchmarks.json")


def arguments(name: str, args: argparse.Namespace) -> list[str]:
    """The flags of run_all that ``name`` takes (each benchmark gets only its own)."""
    argv = []
    if args.random and name in ("bench_compare", "bench_finetune", "bench_unembedding"):
        argv.append("--random")
    if name == "bench_compare" and args.reencode is not None:
        argv += ["--reencode", str(args.reencode)]
    if name == "bench_lr_search" and args.grid:
        argv.append("--grid")
    return argv


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "transformers": importlib.metadata.version("transformers"), "iclgd": _version("iclgd"),
            "commit": commit + ("+uncommitted" if dirty else ""), "python": platform.python_version()}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout on PYTHONPATH, not installed
        return "not installed"


def one(name: str, argv: list[str], json_out: Path) -> None:
    """In the child: run benchmark ``name`` and write what its main returns to ``json_out``."""
    module = importlib.import_module(f"benchmarks.{name}")
    figures = module.main(argv)
    figures["process_peak_mib"] = process_peak_mib()  # its own: wait4's would include run_all's RSS at the spawn
    json_out.write_text(json.dumps(figures, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="random weights of the same shapes everywhere")
    parser.add_argument("--reencode", type=int, default=None, help="bench_compare: examples re-encoded (timed)")
    parser.add_argument("--grid", action="store_true", help="bench_lr_search: also time the grid search")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:  # a child: --one NAME JSON, then the benchmark's own flags, untouched by this parser
        one(argv[1], argv[3:], Path(argv[2]))
        return 0
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    figures: dict = {"machine": machine(), "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        with tempfile.TemporaryDirectory(prefix="iclgd-bench-") as tmp:
            json_out = Path(tmp) / "figures.json"
            command = [sys.executable, "-m", "benchmarks.run_all", "--one", name, str(json_out),
                       *arguments(name, args)]
            seconds, _, done = run_child(command, capture=False)
            result = json.loads(json_out.read_text()) if done.returncode == 0 else {"error": done.returncode}
        result.update(process_s=round(seconds, 1))
        figures[name] = result
        if done.returncode != 0:
            failed.append(name)
        figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        OUT.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\nfigures written to {OUT}")
    for name in names:
        for t in figures[name].get("targets", []):
            print(f"  {'met   ' if t['met'] else 'MISSED'} {t['what']}: {t['value']:g} (target {t['target']})")
    if failed:
        print(f"failed: {', '.join(failed)} (their output is above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
