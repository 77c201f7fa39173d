"""Multi-epoch finetuning on the offline real LMs' shapes: time per epoch against a bare loop, and peak memory.

For each model (SmolLM2-135M, Gemma-3-270M: the real weights where `iclgd models fetch` put them in the cache, else
random weights of the same config, shipped in benchmarks/shapes/) and each FT method, N = 8 demo sequences of 48
tokens (label word: the last token) train for E epochs
  - through iclgd (``iclgd.finetune.finetune``: fp32 trained copies, Q masks, per-layer gradient norms, the
    per-epoch callback), and
  - through a bare loop: the same parameters, loss, batches and torch optimizer; forward + backward + step, nothing
    else.
Reported: seconds per epoch (median over epochs 2..E: the first warms up), iclgd / bare, and the peak memory of each
(a fresh process per case: peak RSS on CPU, peak CUDA allocation on a GPU). Target (issue 11): iclgd within 1.5x
of the bare loop.

Run: python -m benchmarks.bench_finetune [--device cuda] [--epochs 3] [--shapes DIR] [--random]
``--shapes DIR`` reads DIR/<model>/config.json (random weights); the default reads the iclgd model cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.measure import target, write_figures

MODELS = ("smollm2-135m", "gemma3-270m")
SHAPES = Path(__file__).parent / "shapes"  # each model's config.json, for random weights where it is not fetched
METHODS = ("whole-gd-label", "whole-adam-label", "wv:middle-gd-label", "gd")
N_DEMOS, LENGTH = 8, 48


def load(name: str, shapes: Path | None, random_weights: bool, device: str) -> tuple[torch.nn.Module, str]:
    """The model (fp32, eval mode) and where its weights came from."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from iclgd.models.gguf import cache_root

    folder = (shapes / name) if shapes is not None else cache_root() / "models" / name
    if not (folder / "config.json").is_file():
        folder = SHAPES / name  # not fetched: random weights of the config shipped here
    if random_weights or not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        with torch.device(device):  # initialise where it runs (a GPU initialises 270M weights in a blink)
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
        source = "random weights"
    else:
        model, source = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), "real weights"
    return model.to(device=device, dtype=torch.float32).eval(), source


def demo_sequences(vocab: int, device: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(1, vocab, (LENGTH,), generator=generator).to(device) for _ in range(N_DEMOS)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_iclgd(model, method: str, sequences, epochs: int, lr: float, device: str) -> list[float]:
    from iclgd.finetune import finetune

    marks = [time.perf_counter()]

    def on_epoch(epoch: int) -> None:
        _sync(device)
        marks.append(time.perf_counter())

    finetune(model, sequences, lr, method=method, epochs=epochs, label_lengths=[1] * len(sequences),
             on_epoch=on_epoch)
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def run_bare(model, method: str, sequences, epochs: int, lr: float, device: str) -> list[float]:
    """The same training with nothing but forward, backward and the optimizer step."""
    from iclgd.finetune import LOSSES, OPTIMIZERS, parse_method, step_batches

    spec = parse_method(method)
    slices = spec.slices(model)
    assert all(s.mask is None for s in slices), "the bare loop has no fused-Q masking: use an unfused family"
    params = [s.parameter for s in slices]
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = OPTIMIZERS[spec.optimizer](params, spec.lr or lr)
    loss_fn = LOSSES[spec.loss]
    marks = [time.perf_counter()]
    for _ in range(epochs):
        for indices in step_batches(len(sequences), spec.batch):
            optimizer.zero_grad(set_to_none=True)
            for i in indices:
                (loss_fn(model, sequences[i][None], 1) / len(indices)).backward()
            optimizer.step()
        _sync(device)
        marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def one_case(name: str, method: str, impl: str, epochs: int, device: str, shapes: Path | None,
             random_weights: bool) -> dict:
    """One (model, method, implementation) in this process: its epoch times and peak memory."""
    model, source = load(name, shapes, random_weights, device)
    sequences = demo_sequences(model.config.vocab_size, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    run = run_iclgd if impl == "iclgd" else run_bare
    times = run(model, method, sequences, epochs, 1e-4, device)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    parameters = sum(p.numel() for p in model.parameters())
    return {"model": name, "weights": source, "method": method, "impl": impl, "epoch_s": times,
            "s_per_epoch": statistics.median(times[1:] or times), "peak_mb": round(peak, 1),
            "parameters": parameters}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shapes", type=Path, default=None)
    parser.add_argument("--random", action="store_true", help="random weights even where real ones are cached")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "METHOD", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(one_case(*args.case, args.epochs, args.device, args.shapes, args.random)))
        return {}
    load_note = os.getloadavg()
    figures: dict = {"device": args.device, "epochs": args.epochs, "demos": N_DEMOS, "tokens_per_demo": LENGTH,
                     "load_average_before": [round(x, 2) for x in load_note], "cases": {}}
    for name in args.models.split(","):
        for method in args.methods.split(","):
            result = {}
            for impl in ("bare", "iclgd"):
                command = [sys.executable, "-m", "benchmarks.bench_finetune", "--case", name, method, impl,
                           "--epochs", str(args.epochs), "--device", args.device]
                if args.shapes is not None:
                    command += ["--shapes", str(args.shapes)]
                if args.random:
                    command.append("--random")
                out = subprocess.run(command, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    print(f"{name} {method} {impl} failed:\n{out.stderr[-3000:]}", file=sys.stderr, flush=True)
                    figures["cases"][f"{name} {method}"] = {"error": out.stderr[-300:]}
                    break
                result[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            if len(result) < 2:
                continue
            ratio = result["iclgd"]["s_per_epoch"] / result["bare"]["s_per_epoch"]
            figures["cases"][f"{name} {method}"] = {
                "weights": result["iclgd"]["weights"], "parameters": result["iclgd"]["parameters"],
                "bare_s_per_epoch": round(result["bare"]["s_per_epoch"], 4),
                "iclgd_s_per_epoch": round(result["iclgd"]["s_per_epoch"], 4), "iclgd_over_bare": round(ratio, 3),
                "bare_peak_mb": result["bare"]["peak_mb"], "iclgd_peak_mb": result["iclgd"]["peak_mb"],
            }
            print(f"{name:14s} {method:22s} bare {result['bare']['s_per_epoch']:.3f} s/epoch, "
                  f"iclgd {result['iclgd']['s_per_epoch']:.3f} s/epoch ({ratio:.2f}x); peak "
                  f"{result['bare']['peak_mb']:.0f} / {result['iclgd']['peak_mb']:.0f} MiB", flush=True)
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["targets"] = [target(f"finetuning epoch, iclgd / bare loop: {case}", c["iclgd_over_bare"], at_most=1.5)
                          for case, c in figures["cases"].items() if "error" not in c]
    if args.json is not None:
        write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
