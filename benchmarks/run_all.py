"""Run every benchmark once and print its figures (ratios measured in one run)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = ("bench_compare", "bench_linreg", "bench_finetune", "bench_lr_search", "bench_unembedding",
              "bench_lm_eval")


def main() -> None:
    figures = {}
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"benchmarks.{name}":
                continue
            raise
        print(f"== {name}", flush=True)
        figures[name] = module.main()
    out = Path("results/benchmarks.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"figures written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
