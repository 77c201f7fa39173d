"""The README's benchmark table, from one run's results/benchmarks.json: every figure a ratio of two sides measured
in that run, beside its target and whether the run met it.

Run: python -m benchmarks.table [results/benchmarks.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def _mib(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ") + " MiB"


def _met(targets: list[dict], what: str) -> str:
    found = [t for t in targets if t["what"].startswith(what)]
    return " ".join(f"{t['target']}: {'met' if t['met'] else '**missed**'}" for t in found)


def rows(figures: dict) -> list[tuple[str, str, str]]:
    """(what, measured, target) for each benchmark that ran."""
    out: list[tuple[str, str, str]] = []
    if "scoring" in (compare := figures.get("bench_compare", {})):
        sc, cp, mem, targets = compare["scoring"], compare["compare"], compare.get("memory"), compare["targets"]
        out.append((f"ICL scoring on {compare['model']}, k = {sc['true_k']} ({sc['prefix_tokens']}-token prefix), "
                    f"{sc['eval']} queries: one cached prefix vs re-encoding each prompt (timed on "
                    f"{sc['reencode_timed_examples']}, one at a time, scaled)",
                    f"{_s(sc['cached_s'])} vs {_s(sc['reencode_s'])}: **{sc['speedup']:.1f}x** faster",
                    _met(targets, "ICL scoring")))
        out.append(("a full compare (ZS / ICL / GD / random-direction passes with capture, metrics) vs its bare "
                    "passes", f"{_s(cp['compare_s'])} vs {_s(cp['bare_s'])}: **{cp['overhead']:.2f}x**",
                    _met(targets, "full compare")))
        if mem:
            out.append((f"peak memory of a compare at {mem['eval_small']} vs {mem['eval_large']} eval examples",
                        f"{_mib(mem['small']['peak_mib'])} vs {_mib(mem['large']['peak_mib'])}: "
                        f"**{mem['growth']:.3f}x**", _met(targets, "peak memory, 4x the eval")))
            out.append(("peak memory of whole-model GD over 4 epochs (2 orderings, output metrics), measured after "
                        "the last vs after each",
                        f"{_mib(mem['epochs_recorded_1']['peak_mib'])} vs {_mib(mem['epochs_recorded_4']['peak_mib'])}"
                        f": **{mem['epochs_growth']:.3f}x**", _met(targets, "peak memory, 4x the epochs")))
    if "cases" in (finetune := figures.get("bench_finetune", {})):
        ratios = [t["value"] for t in finetune["targets"]]
        out.append((f"multi-epoch finetuning, iclgd vs a bare loop, {len(ratios)} cases (model × method; the table "
                    "in the Shen et al. section)", f"**{min(ratios):.2f}x to {max(ratios):.2f}x** per epoch",
                    "<= 1.5: " + ("met" if all(t["met"] for t in finetune["targets"]) else "**missed**")))
    for task, by_search in figures.get("bench_lr_search", {}).get("tasks", {}).items():
        for search in ("halving", "grid"):
            if search in by_search:
                f = by_search[search]
                met = "met" if f["search_over_given"] <= 2 else "**missed**"
                out.append((f"a compare with the {search} lr search vs with its chosen lr given ({task}, k = 16)",
                            f"{_s(f['search_s'])} vs {_s(f['given_s'])}: **{f['search_over_given']:.2f}x** "
                            f"(lr {f['chosen_lr']:g})", f"<= 2: {met}"))
    if "scoring" in (unembed := figures.get("bench_unembedding", {})):
        sc, tr = unembed["scoring"], unembed["training"]
        out.append((f"Gemma-3-270M, {sc['prompts']} prompts of {sc['tokens']} tokens: unembedding every position vs "
                    "the scored one", f"{_s(sc['every_position_s'])} vs {_s(sc['scored_position_s'])}: "
                    f"**{sc['speedup']:.2f}x**; peak {_mib(sc['every_position_peak_mib'])} vs "
                    f"{_mib(sc['scored_position_peak_mib'])}", ""))
        out.append((f"Gemma-3-270M, an epoch of whole-model SGD on the label-token loss ({tr['sequences']} × "
                    f"{tr['tokens']} tokens): every position vs the label's",
                    f"{_s(tr['every_position_s'])} vs {_s(tr['label_positions_s'])}: **{tr['speedup']:.2f}x**", ""))
    lm_eval = figures.get("bench_lm_eval", {})
    for k, f in lm_eval.get("shots", {}).items():
        out.append((f"ICL accuracy on {lm_eval['task']}, {lm_eval['docs']} docs, {k} shots: lm-eval "
                    f"{lm_eval['lm_eval']} vs `iclgd icl-curve`, whole processes",
                    f"{_s(f['lm_eval_s'])} vs {_s(f['iclgd_s'])}: **{f['speedup']:.1f}x**; peak "
                    f"{_mib(f['lm_eval_peak_mib'])} vs {_mib(f['iclgd_peak_mib'])}",
                    _met(lm_eval["targets"], f"ICL scoring, lm-eval / iclgd, {k} shots")))
    if "steps_per_second" in (linreg := figures.get("bench_linreg", {})):
        out.append((f"linear-regression training (batch {linreg['batch_size']}, {linreg['layers']} layer)",
                    f"{linreg['steps_per_second']:.0f} steps/s with 1 thread, "
                    f"{linreg['steps_per_second_2_threads']:.0f} with 2", ""))
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "results/benchmarks.json")
    figures = json.loads(path.read_text())
    print("| what | measured | target |\n|---|---|---|")
    for what, measured, goal in rows(figures):
        print(f"| {what} | {measured} | {goal} |")
    peaks = {name: f["process_peak_mib"] for name, f in figures.items()
             if isinstance(f, dict) and "process_peak_mib" in f}
    print("\nPeak memory of each benchmark's own process (the cases it runs in processes of their own have their "
          "peaks in its rows): "
          + ", ".join(f"{name} {_mib(peak)}" for name, peak in peaks.items()))


if __name__ == "__main__":
    main()
