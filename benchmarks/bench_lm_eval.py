"""ICL scoring against lm-evaluation-harness 0.4.x: the same model folder, task data, k and eval docs, CPU.

SmolLM2-135M (the offline real weights) on movie-review sentences (`vader-movie`: Pang & Lee's MR sentences rated
by humans), 200 eval docs, k = 16 and 32, as whole processes:
  - lm-eval: a task YAML over local JSON files (iclgd's own rendering of each row, the same separator between
    demos, the label words as choices), ``python -m lm_eval --model hf --num_fewshot k --batch_size 16``;
  - iclgd: ``iclgd icl-curve --k k --eval-size 200``.
lm-eval draws new demos for every doc and encodes each prompt whole; iclgd encodes one demo prefix per unit (Dai's
protocol: one fixed demo set) and scores every doc on it. Both report accuracy; the accuracies differ by the demos
drawn, not by the scoring rule (label-word log-likelihood in both). Targets (issue 11): >= 15x at 16 shots, >= 25x
at 32.

lm-eval is an optional dependency (``pip install -e ".[bench]"``); without it this benchmark says so and
skips. Run: python -m benchmarks.bench_lm_eval [--shots 16,32] [--docs 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import run_child, target

MODEL, TASK = "smollm2-135m", "vader-movie"


def export_task(folder: Path, docs: int) -> tuple[Path, str]:
    """iclgd's pool and eval rows of TASK as lm-eval JSON files and task YAML; returns (yaml, lm-eval task name)."""
    from iclgd.experiments.compare import bos_and_separator, select_rows
    from iclgd.experiments.config import CompareConfig
    from iclgd.models.loading import load_model
    from iclgd.tasks import render_input

    cfg = CompareConfig(model=MODEL, task=TASK, shots=1, seed=1, eval_size=docs)
    rows = select_rows(cfg)
    _, separator = bos_and_separator(cfg, rows.task, load_model(MODEL).family)
    labels = list(rows.task.label_words)
    folder.mkdir(parents=True, exist_ok=True)
    for split, examples in (("train", rows.pool), ("test", rows.eval_rows)):
        with (folder / f"{split}.jsonl").open("w") as f:
            for ex in examples:
                f.write(json.dumps({"prompt": render_input(rows.template, ex), "label": labels.index(ex.label)}) + "\n")
    words = [rows.task.label_words[name] for name in labels]
    if not all(w.startswith(" ") for w in words):
        raise SystemExit(f"{TASK}'s label words {words} do not start with a space: adjust target_delimiter")
    name = "iclgd_" + re.sub(r"\W", "_", TASK)
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    train: {folder / 'train.jsonl'}\n    test: {folder / 'test.jsonl'}\n"
        "output_type: multiple_choice\ntraining_split: train\ntest_split: test\nfewshot_split: train\n"
        'doc_to_text: "{{prompt}}"\ndoc_to_target: label\n'
        f"doc_to_choice: {json.dumps([w[1:] for w in words])}\ntarget_delimiter: \" \"\n"
        f"fewshot_delimiter: {json.dumps(separator)}\n"
        "metric_list:\n  - metric: acc\n"
    )
    return folder / f"{name}.yaml", name


def _timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, the process's own peak RSS (MiB) and its output."""
    seconds, peak, done = run_child(command, env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-3000:]}")
    return seconds, peak, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shots", default="16,32")
    parser.add_argument("--docs", type=int, default=200)
    args = parser.parse_args(argv)
    if importlib.util.find_spec("lm_eval") is None:
        print('lm-eval is not installed: pip install "lm-eval[hf]>=0.4,<0.5" to run this benchmark')
        return {"skipped": "lm-eval not installed"}
    from benchmarks.bench_compare import cached_real_weights

    folder = cached_real_weights(MODEL)
    if folder is None:
        print(f"{MODEL} is not in the model cache: `iclgd models fetch {MODEL}` to run this benchmark")
        return {"skipped": f"{MODEL} not cached"}
    from importlib.metadata import version

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    figures: dict = {"model": MODEL, "task": TASK, "docs": args.docs, "lm_eval": version("lm_eval"),
                     "load_average_before": [round(x, 2) for x in os.getloadavg()], "shots": {}}
    with tempfile.TemporaryDirectory(prefix="iclgd-bench-lm-eval-") as tmp:
        task_yaml, task_name = export_task(Path(tmp) / "task", args.docs)
        for k in (int(s) for s in args.shots.split(",")):
            lm_eval_s, lm_eval_peak, lm_eval_log = _timed(
                [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                 f"pretrained={folder},dtype=float32", "--device", "cpu", "--tasks", task_name, "--include_path",
                 str(task_yaml.parent), "--num_fewshot", str(k), "--batch_size", "16", "--seed", "1"], env)
            iclgd_s, iclgd_peak, iclgd_log = _timed(
                [sys.executable, "-m", "iclgd", "icl-curve", "--model", MODEL, "--task", TASK, "--k", str(k),
                 "--eval-size", str(args.docs), "--seeds", "1", "--out", str(Path(tmp) / f"icl-{k}")], env)
            match = re.search(r"\|\s*acc\s*\|[^|]*\|\s*([0-9.]+)", lm_eval_log)
            figures["shots"][k] = {"lm_eval_s": round(lm_eval_s, 1), "iclgd_s": round(iclgd_s, 1),
                                   "speedup": round(lm_eval_s / iclgd_s, 1), "lm_eval_peak_mib": lm_eval_peak,
                                   "iclgd_peak_mib": iclgd_peak,
                                   "lm_eval_accuracy": float(match.group(1)) if match else None}
            print(f"k = {k:2d}: lm-eval {lm_eval_s:6.1f} s, iclgd icl-curve {iclgd_s:5.1f} s -> "
                  f"{lm_eval_s / iclgd_s:.1f}x (target {15 if k <= 16 else 25}x); peak {lm_eval_peak:.0f} vs "
                  f"{iclgd_peak:.0f} MiB", flush=True)
    figures["targets"] = [target(f"ICL scoring, lm-eval / iclgd, {k} shots", f["speedup"],
                                 at_least=15 if k <= 16 else 25) for k, f in figures["shots"].items()]
    return figures


if __name__ == "__main__":
    main()
