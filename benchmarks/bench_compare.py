"""Speed of a compare on SmolLM2-135M (the real weights, where `iclgd models fetch` cached them; else its shape with
random weights, or with --random), CPU.

1. ICL scoring: the demonstration prefix encoded once and shared by every eval batch, vs re-encoding the
   whole prompt (prefix + query) for every example. Target: >= 20x (the floor is ~30x, DESIGN.md).
2. A full compare (finetune, ZS / ICL / FT / random-direction passes with capture, metrics) vs the bare
   passes it needs: the same forward and backward passes on the same cached path, with no capture and no
   metric. Target: <= 1.3x.
3. Peak memory of the compare's passes at two eval sizes, and of a whole-model GD unit (two orderings: order
   sensitivity; output metrics) measured after 1 vs 4 of its 4 epochs: it must grow with neither beyond the
   results themselves.

Run: python -m benchmarks.bench_compare [--eval 200] [--reencode 25] [--random]
Re-encoding is timed on the first --reencode examples and scaled to the eval size (each example is an
independent forward of the same length, so the cost is linear); --reencode 200 times all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.measure import target

WORDS = ("the a film movie plot story actor scene music great good bad dull boring moving funny long short "
         "slow fast dark bright warm cold simple clever quiet loud new old").split()


def make_task(folder: Path, *, n_pool: int = 64, n_eval: int = 200, seed: int = 0) -> Path:
    """A local two-class task whose demos are ~60 tokens, so 32 demos make a ~2 000-token prefix."""
    rng = random.Random(seed)

    def row(i: int) -> dict:
        words = [rng.choice(WORDS) for _ in range(57 if i >= 0 else 26)]
        return {"text": " ".join(words), "label": rng.choice(["negative", "positive"])}

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(row(i)) + "\n" for i in range(n_pool)))
    (folder / "test.jsonl").write_text("".join(json.dumps(row(-1)) + "\n" for _ in range(n_eval)))
    task = folder / "bench.yaml"
    task.write_text(
        "task: bench\ndataset_path: .\ntraining_split: train\ntest_split: test\n"
        'doc_to_text: "Review: {text} Sentiment:"\nlabel_field: label\n'
        'doc_to_choice:\n  negative: " Negative"\n  positive: " Positive"\n'
        f"eval_size: {n_eval}\n"
    )
    return task


def smollm2_shape(folder: Path) -> Path:
    """SmolLM2-135M's shape (its config, shipped in benchmarks/shapes/) with random weights and a small tokenizer of
    the task's words, written to ``folder``: what the benchmarks measure where the real model is not fetched."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from iclgd.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer("llama", WORDS + ["Review", "Sentiment", "Negative", "Positive"])
    config = AutoConfig.from_pretrained(Path(__file__).parent / "shapes" / "smollm2-135m")
    config.update({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": None})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cached_real_weights(name: str) -> Path | None:
    """The model cache's folder of a named model (`iclgd models fetch`) when it holds real weights, else None."""
    from iclgd.models.gguf import cache_root

    folder = cache_root() / "models" / name
    return folder if (folder / "model.safetensors").is_file() else None


def real_or_random(folder: Path, random_weights: bool) -> tuple[Path, str]:
    """SmolLM2-135M's cached folder when it holds real weights (and not ``random_weights``), else its shape with
    random weights written to ``folder``; with a description of which."""
    real = cached_real_weights("smollm2-135m")
    if not random_weights and real is not None:
        return real, "SmolLM2-135M (real weights)"
    return smollm2_shape(folder), "SmolLM2-135M's shape (random weights)"


def _config(model: Path, task: Path, out: Path, n_eval: int):
    from iclgd.experiments.config import CompareConfig

    return CompareConfig(model=str(model), task=str(task), shots=32, seed=1, eval_size=n_eval, lr=1e-3,
                         methods=["gd"], batch_size=25, out=str(out), kendall_examples=100)


def bench_scoring(model: Path, task: Path, out: Path, n_eval: int, n_reencode: int) -> dict:
    from iclgd.experiments.compare import prepare_unit, select_rows
    from iclgd.models.capture import encode_prefix, forward
    from iclgd.models.loading import load_model
    from iclgd.prompts.scoring import _pad, batches, pad_id

    cfg = _config(model, task, out, n_eval)
    lm = load_model(cfg.model)
    prompts = prepare_unit(cfg, lm, select_rows(cfg)).prompts
    queries = prompts.queries
    with torch.inference_mode():
        start = time.perf_counter()
        prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids))
        for indices in batches(len(queries), cfg.batch_size):
            ids, mask = _pad([queries[i].input_ids for i in indices], pad_id(lm))
            ends = torch.tensor([[queries[i].prompt_end] for i in indices])
            forward(lm, ids, mask, prefix=prefix, logits_at=ends)
        cached = time.perf_counter() - start
        start = time.perf_counter()
        for q in queries[:n_reencode]:
            ids = torch.tensor([prompts.prefix_ids + q.input_ids])
            end = torch.tensor([[len(prompts.prefix_ids) + q.prompt_end]])
            forward(lm, ids, torch.ones_like(ids), logits_at=end)
        reencode = (time.perf_counter() - start) * len(queries) / n_reencode
    return {"prefix_tokens": len(prompts.prefix_ids), "true_k": prompts.true_k, "eval": len(queries),
            "cached_s": cached, "reencode_s": reencode, "reencode_timed_examples": n_reencode,
            "speedup": reencode / cached}


def bench_compare(model: Path, task: Path, out: Path, n_eval: int) -> dict:
    """The full compare vs the bare passes it needs, in one process, timed back to back."""
    from iclgd import finetune as finetuning
    from iclgd.experiments.compare import prepare_unit, run_compare, select_rows
    from iclgd.models.capture import encode_prefix
    from iclgd.models.loading import load_model
    from iclgd.prompts.scoring import batches, score_batch

    cfg = _config(model, task, out, n_eval)
    run_compare(cfg.model_copy(update={"eval_size": 25}), show_progress=False)  # warm-up
    start = time.perf_counter()
    result = run_compare(cfg, show_progress=False)
    full = time.perf_counter() - start
    start = time.perf_counter()  # both sides' clocks include the model load and the rows' selection
    lm = load_model(cfg.model)
    prompts = prepare_unit(cfg, lm, select_rows(cfg)).prompts
    original = finetuning.snapshot(lm)
    trained = finetuning.finetune(lm, prompts.training_sequences(), cfg.lr, method="gd").tensors
    direction = {k: v + 0.01 for k, v in trained.items()}
    with torch.inference_mode():
        prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids))
        for indices in batches(len(prompts.queries), cfg.batch_size):
            score_batch(lm, prompts, indices, prefix=None, capture=False)
            score_batch(lm, prompts, indices, prefix=prefix, capture=False)
            for tensors in (trained, direction):
                finetuning.swap_in(lm, tensors)
                score_batch(lm, prompts, indices, prefix=None, capture=False)
                finetuning.restore(lm, original)
    bare = time.perf_counter() - start
    return {"compare_s": full, "bare_s": bare, "overhead": full / bare,
            "compare_timings": result.record["timings"]}


def memory_mib(model: Path, task: Path, out: Path, n_eval: int, **overrides) -> dict:
    """A fresh process running one compare unit (no results written), config fields overridden: its peak RSS, the
    peak after the model load (the load's own peak reset away), and the RSS the finished unit still holds (its
    result included): a peak set by one passing step hides growth that the held RSS shows."""
    code = (
        "import gc, json; from pathlib import Path; from benchmarks.bench_compare import _config;"
        "from benchmarks.measure import peak_mib, reset_peak, rss_mib; import iclgd.experiments.compare as c;"
        "seen = {}; load = c.load_model\n"
        "def load_then_reset(*a, **k):\n"
        "    lm = load(*a, **k); seen.update(loaded=rss_mib(), load_peak=peak_mib(), reset=reset_peak()); return lm\n"
        "c.load_model = load_then_reset\n"
        f"cfg = _config(Path({str(model)!r}), Path({str(task)!r}), Path({str(out)!r}), {n_eval})\n"
        f"result = c.run_compare(cfg.model_copy(update={overrides!r}), show_progress=False); gc.collect()\n"
        "print(json.dumps({'peak_mib': max(seen['load_peak'], peak_mib()), 'loaded_mib': seen['loaded'],"
        " 'unit_peak_mib': peak_mib() if seen['reset'] else None, 'held_mib': rss_mib()}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--reencode", type=int, default=25)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--random", action="store_true", help="random weights even where SmolLM2 is cached")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the 2-core machine's figures, on any machine
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, source = real_or_random(tmp / "smollm2-shape", args.random)
        task = make_task(tmp / "task", n_eval=args.eval)
        figures = {"model": source, "load_average_before": [round(x, 2) for x in os.getloadavg()],
                   "scoring": bench_scoring(model, task, tmp / "out", args.eval, args.reencode),
                   "compare": bench_compare(model, task, tmp / "out", args.eval)}
        if not args.skip_memory:
            small, large = args.eval // 4, args.eval
            # Shen-style: whole-model GD over 4 epochs, measured after the last only vs after every one, with what
            # each recorded epoch adds (order sensitivity over 2 orderings, the output metrics)
            shen = {"methods": ["whole-gd-label"], "epochs": 4, "kendall_examples": 0, "orderings": 2,
                    "output_metrics": True}
            figures["memory"] = {
                "eval_small": small, "eval_large": large,
                "small": memory_mib(model, task, tmp / "out", small),
                "large": memory_mib(model, task, tmp / "out", large),
                "epochs_recorded_1": memory_mib(model, task, tmp / "out", small, **shen, record_epochs=[4]),
                "epochs_recorded_4": memory_mib(model, task, tmp / "out", small, **shen, record_epochs=[1, 2, 3, 4])}
    s, c = figures["scoring"], figures["compare"]
    figures["targets"] = [target("ICL scoring, cached prefix vs re-encoding (speedup)", s["speedup"], at_least=20),
                          target("full compare / its bare passes", c["overhead"], at_most=1.3)]
    if "memory" in figures:
        m = figures["memory"]
        m["growth"] = m["large"]["peak_mib"] / m["small"]["peak_mib"]
        m["epochs_growth"] = m["epochs_recorded_4"]["peak_mib"] / m["epochs_recorded_1"]["peak_mib"]
        # "flat": within 5 % (the results themselves grow a little with the rows kept)
        figures["targets"] += [target("peak memory, 4x the eval rows (ratio)", m["growth"], at_most=1.05),
                               target("peak memory, 4x the epochs recorded (ratio)", m["epochs_growth"], at_most=1.05)]
    s, c = figures["scoring"], figures["compare"]
    print(source)
    print(f"ICL scoring, {s['prefix_tokens']}-token prefix (true k {s['true_k']}), {s['eval']} queries: "
          f"cached prefix {s['cached_s']:.1f} s vs re-encoding {s['reencode_s']:.1f} s "
          f"(timed on {s['reencode_timed_examples']}, one at a time, scaled) -> {s['speedup']:.1f}x faster "
          "(target >= 20x)")
    print(f"full compare {c['compare_s']:.1f} s vs bare passes {c['bare_s']:.1f} s -> {c['overhead']:.2f}x "
          "(target <= 1.3x)")
    if "memory" in figures:
        m = figures["memory"]
        for key, label in (("small", f"{m['eval_small']} eval rows"), ("large", f"{m['eval_large']} eval rows"),
                           ("epochs_recorded_1", "whole-model GD, 4 epochs, 2 orderings, 1 recorded"),
                           ("epochs_recorded_4", "whole-model GD, 4 epochs, 2 orderings, 4 recorded")):
            x = m[key]
            print(f"memory, {label}: peak {x['peak_mib']:.0f} MiB (the model loaded: {x['loaded_mib']:.0f}; the unit's "
                  f"own peak after it: {x['unit_peak_mib']}), held at the end {x['held_mib']:.0f} MiB")
    return figures


if __name__ == "__main__":
    main()
