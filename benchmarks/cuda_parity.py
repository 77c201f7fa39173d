"""The CUDA path of a compare unit against the CPU path: one Shen-style unit (K/V SGD, whole-model GD and Adam over
epochs, output metrics, three orderings) on a tiny LLaMA, run on both devices in float32; prints the largest
difference of any stored value and writes the figures. Needs a GPU (run it on one: it is not part of the tests).

Run: python -m benchmarks.cuda_parity [--out results/cuda_parity.json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from benchmarks.measure import write_figures


def unit_values(model_dir: Path, device: str, out: Path) -> dict[tuple, float]:
    from iclgd.experiments.compare import run_compare
    from iclgd.experiments.config import CompareConfig
    from iclgd.tasks import FIXTURES_DIR

    cfg = CompareConfig(model=str(model_dir), task="sst2", data_dir=str(FIXTURES_DIR), shots=4, seed=1, eval_size=8,
                        lr=0.05, methods=["gd", "whole-gd-label", "whole-adam-label@1e-3"], epochs=3,
                        output_metrics=True, orderings=3, batch_size=4, device=device, out=str(out))
    result = run_compare(cfg, show_progress=False)
    return {(r["method"], r["metric"], r["layer"], r["epoch"]): r["value"] for r in result.metrics}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("results/cuda_parity.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine")
    from iclgd.models.tiny import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_model("llama", Path(tmp) / "llama")
        cpu = unit_values(model_dir, "cpu", Path(tmp) / "cpu")
        cuda = unit_values(model_dir, "cuda", Path(tmp) / "cuda")
    assert cpu.keys() == cuda.keys(), sorted(set(cpu) ^ set(cuda))[:5]
    unlike = [key for key in cpu if math.isfinite(cpu[key]) != math.isfinite(cuda[key])]
    if unlike:
        raise SystemExit(f"finite on one device only: {unlike[:5]}")
    differences = {key: abs(cpu[key] - cuda[key]) for key in cpu if math.isfinite(cpu[key])}
    worst = sorted(differences, key=differences.get, reverse=True)[:10]
    figures = {"values": len(cpu), "max_abs_difference": max(differences.values()),
               "worst": [[*map(str, key), differences[key]] for key in worst],
               "gpu": torch.cuda.get_device_name()}
    print(json.dumps(figures, indent=1))
    write_figures(args.out, figures)
    return figures


if __name__ == "__main__":
    main()
