"""Issue 11, item 7: the benchmarks on a CUDA device, as absolute times, on random weights of real shapes.

For each shape (SmolLM2-135M, Gemma-3-270M and Dai et al.'s fairseq-dense-1.3B, configs in benchmarks/shapes/;
random weights, a small tokenizer of the benchmark task's words, the real vocabulary size), on the benchmark task
of bench_compare (~60-token demos):
1. ICL scoring: the label scores of ``--eval`` rows after a ``--shots``-demo prefix (32), in float32 and in
   bfloat16 (the inference passes of every experiment), and the zero-shot pass;
2. one whole compare unit in float32 (Dai's GD, k = half of ``--shots``, ``--eval`` rows, the lr given): wall
   time, its phases, and the device's peak memory;
3. the lr search's trainer: Dai's GD at one lr (``finetune_gd``), and the 36 points of Dai's grid as one batch of
   trajectories (``gd_trajectories``), on the unit's demos;
then ``bench_finetune --device <device>`` (multi-epoch finetuning against a bare loop) in a process of its own.
Every figure is a median of ``--repeats`` runs after a warm-up run (CUDA kernels and cuBLAS are set up lazily).

Run (on a GPU machine): python -m benchmarks.bench_gpu [--json results/gpu_benchmarks.json]
CPU smoke run (what the tests run): python -m benchmarks.bench_gpu --device cpu --tiny --eval 2 --shots 4 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.bench_compare import WORDS, make_task
from benchmarks.measure import write_figures

SHAPES = Path(__file__).parent / "shapes"
MODELS = ("smollm2-135m", "gemma3-270m", "fairseq-dense-1.3b")
# --tiny: each shape cut to 2 layers of width 64 (same family, same code paths), for a smoke run on a CPU.
TINY = {"llama": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16),
        "gemma3_text": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=16, layer_types=["sliding_attention", "full_attention"]),
        "xglm": dict(num_layers=2, d_model=64, ffn_dim=128, attention_heads=4)}


def shape_model(name: str, folder: Path, tiny: bool) -> Path:
    """Random weights of ``name``'s shape (``tiny``: cut to 2 layers, the tokenizer's vocabulary) and a tokenizer of
    the task's words, saved to ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from iclgd.models.families import family_of
    from iclgd.models.tiny import tiny_tokenizer

    config = AutoConfig.from_pretrained(SHAPES / name)
    tokenizer = tiny_tokenizer(family_of(config).name,
                               list(WORDS) + ["Review", "Sentiment", "Negative", "Positive"])
    config.update({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id})
    if tiny:
        config.update({**TINY[config.model_type], "vocab_size": len(tokenizer)})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run: Callable[[], object], device: str, repeats: int) -> tuple[float, float]:
    """(median seconds of ``repeats`` runs after one warm-up, peak device MiB of those runs; 0 on a CPU)."""
    run()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return round(statistics.median(seconds), 4), round(peak, 1)


def one_shape(name: str, folder: Path, task: Path, device: str, n_eval: int, repeats: int, shots: int) -> dict:
    from iclgd.experiments.compare import prepare_unit, run_compare, select_rows
    from iclgd.experiments.config import CompareConfig
    from iclgd.experiments.passes import label_scores
    from iclgd.finetune import DAI_LR_GRID, finetune_gd
    from iclgd.finetune.trajectories import gd_trajectories
    from iclgd.models.loading import load_model

    figures: dict = {"parameters": None}
    for dtype in ("float32", "bfloat16"):
        cfg = CompareConfig(model=str(folder), task=str(task), shots=shots, seed=1, eval_size=n_eval, lr=1e-3,
                            methods=["gd"], batch_size=32, dtype=dtype, device=device)
        lm = load_model(cfg.model, dtype=dtype, device=device)
        figures["parameters"] = sum(p.numel() for p in lm.model.parameters())
        prompts = prepare_unit(cfg, lm, select_rows(cfg)).prompts
        figures[f"icl_scoring_{dtype}_s"], figures[f"icl_scoring_{dtype}_peak_mib"] = timed(
            lambda lm=lm, prompts=prompts: label_scores(lm, prompts, with_demos=True, batch_size=32), device,
            repeats)
        figures[f"zs_scoring_{dtype}_s"], _ = timed(
            lambda lm=lm, prompts=prompts: label_scores(lm, prompts, with_demos=False, batch_size=32), device, repeats)
        figures["prefix_tokens"] = len(prompts.prefix_ids)
        del lm

    with tempfile.TemporaryDirectory() as out:
        cfg = CompareConfig(model=str(folder), task=str(task), shots=shots // 2, seed=1, eval_size=n_eval, lr=1e-3,
                            methods=["gd"], batch_size=32, device=device, out=out)
        records = []
        figures["compare_float32_s"], figures["compare_float32_peak_mib"] = timed(
            lambda: records.append(run_compare(cfg, show_progress=False)), device, repeats)
        figures["compare_phases_s"] = {k: round(v, 3) for k, v in records[-1].record["timings"].items()}

        lm = load_model(cfg.model, device=device)
        demos = prepare_unit(cfg, lm, select_rows(cfg)).prompts.training_sequences()
        figures["finetune_gd_one_lr_s"], _ = timed(lambda: finetune_gd(lm, demos, 1e-3), device, repeats)
        figures["trajectories_36_lrs_s"], figures["trajectories_36_lrs_peak_mib"] = timed(
            lambda: gd_trajectories(lm, demos, list(DAI_LR_GRID)), device, repeats)
    print(f"{name:20s} ICL scoring fp32 {figures['icl_scoring_float32_s']:.3f} s, bf16 "
          f"{figures['icl_scoring_bfloat16_s']:.3f} s ({n_eval} rows, {figures['prefix_tokens']}-token prefix); "
          f"compare {figures['compare_float32_s']:.2f} s (peak {figures['compare_float32_peak_mib']:.0f} MiB); GD "
          f"one lr {figures['finetune_gd_one_lr_s']:.3f} s, 36 lrs batched {figures['trajectories_36_lrs_s']:.3f} s",
          flush=True)
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shots", type=int, default=32, help="ICL scoring's demos (the compare unit: half)")
    parser.add_argument("--tiny", action="store_true", help="each shape cut to 2 layers: a smoke run, no figures")
    parser.add_argument("--skip-finetune", action="store_true", help="leave out bench_finetune")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine (or pass --device cpu for a smoke run)")
    figures: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
                     "torch": torch.__version__, "eval_rows": args.eval, "repeats": args.repeats, "shots": args.shots,
                     "weights": "random, of each model's shape" + (" cut to 2 layers (--tiny)" if args.tiny else ""),
                     "shapes": {}}
    with tempfile.TemporaryDirectory(prefix="iclgd-bench-gpu-") as tmp:
        tmp = Path(tmp)
        task = make_task(tmp / "task", n_eval=args.eval)
        for name in args.models.split(","):
            folder = shape_model(name, tmp / name, args.tiny)
            figures["shapes"][name] = one_shape(name, folder, task, args.device, args.eval, args.repeats,
                                                 args.shots)
    if not args.skip_finetune:
        command = [sys.executable, "-m", "benchmarks.bench_finetune", "--device", args.device, "--random",
                   "--models", "smollm2-135m,gemma3-270m", "--shapes", str(SHAPES)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        print(done.stdout, end="", flush=True)
        figures["finetune"] = {"returncode": done.returncode, "output": done.stdout[-4000:],
                               "error": done.stderr[-2000:] if done.returncode else None}
    if args.json is not None:
        write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
