"""A unit's metric values gathered batch by batch, and the rows they become.

Every value is kept per example (so that it has a bootstrap interval over examples) under (method, metric, epoch):
method is the pass, or the FT method ICL is compared with; epoch the FT epoch it was measured at (None for passes
without training: zs, icl).
"""

from __future__ import annotations

from typing import Any

import torch

from iclgd import metrics
from iclgd.models.capture import Capture
from iclgd.prompts.scoring import BatchScores
from iclgd.prompts.sequences import Prompts
from iclgd.runner.store import layer_rows, metric_row

Key = tuple[str, str, int | None]  # (method, metric, epoch)

# Each score's within-unit baselines: name -> (method, metric), method None = the score's own FT method. The output
# metrics' baseline is the noise floor: the same metric between ICL under two orderings (method "icl_vs_icl").
BASELINES: dict[str, dict[str, tuple[str | None, str]]] = {
    "simaou_norm": {"random": ("icl", "simaou_norm_random"),
                    "random_direction": (None, "simaou_norm_random_direction")},
    "simaou": {"random": ("icl", "simaou_random"), "random_direction": (None, "simaou_random_direction")},
    "simam": {"before": ("icl", "simam_before")},
    "kendall": {"random": (None, "kendall_random")},
    **{name: {"order_floor": ("icl_vs_icl", name)} for name in metrics.OUTPUT_METRICS},
}


def stream_name(base: str, epoch: int | None) -> str:
    """The bootstrap stream of a value: its name, and its epoch after the first (single-epoch units keep the streams,
    hence the intervals, they had before epochs were recorded)."""
    return base if epoch in (None, 1) else f"{base}/{epoch}"


def _own(values: torch.Tensor) -> torch.Tensor:
    """``values`` in storage of their own: a metric's per-example values can be a view of a pass's [B, V] tensor
    (9.8 MiB per batch of 25 on SmolLM2), which keeping the view would keep alive for the whole unit."""
    return values.clone() if values.untyped_storage().nbytes() > values.numel() * values.element_size() else values


class Accumulator:
    """Per-example values of each (method, metric, epoch), [N, L] (or [N] for a metric without layers), with
    zero-Δ counts, and per-pass counts of the test-token keys a window hid (spec: excluded and counted)."""

    def __init__(self) -> None:
        self.values: dict[Key, list[torch.Tensor]] = {}
        self.zeros: dict[Key, list[torch.Tensor]] = {}
        self.cases_per_example: dict[Key, int] = {}
        self.masked_keys: dict[str, torch.Tensor] = {}  # pass -> [L] keys hidden
        self.test_keys: dict[str, int] = {}  # pass -> test-token keys seen per layer
        self.masked_key_epochs: dict[str, int | None] = {}

    def add_masked_keys(self, name: str, capture: Capture, epoch: int | None = None) -> None:
        """``epoch``: the FT epoch of the pass (an FT method's keys are counted at its last epoch)."""
        hidden = capture.masked_keys.sum(0)
        self.masked_keys[name] = self.masked_keys.get(name, torch.zeros_like(hidden)) + hidden
        self.test_keys[name] = self.test_keys.get(name, 0) + int(capture.test_length.sum())
        self.masked_key_epochs[name] = epoch

    def add(self, method: str, metric: str, result: metrics.LayerAverage, cases_per_example: int = 1,
            epoch: int | None = None) -> None:
        """``cases_per_example``: cosines behind one example's value (heads for SimAM), for the zero counts."""
        key = (method, metric, epoch)
        self.values.setdefault(key, []).append(_own(result.per_example.detach().double().cpu()))
        self.zeros.setdefault(key, []).append(_own(result.zero_per_example.long().cpu()))
        self.cases_per_example[key] = cases_per_example

    def add_scalar(self, method: str, metric: str, per_example: torch.Tensor, epoch: int | None = None) -> None:
        """A metric without layers (output distributions, order sensitivity): one value per example, [B]."""
        self.values.setdefault((method, metric, epoch), []).append(_own(per_example.detach().double().flatten().cpu()))

    def rows(self, keys: dict[str, Any]) -> list[dict[str, Any]]:
        """Per-layer rows and the layer-null mean, plus a `*_zero_count` companion for every per-layer metric
        (value: cases counted as zero; count: cases tested); one layer-null row for a metric without layers."""
        rows = []
        for (method, metric, epoch), chunks in self.values.items():
            per_example = torch.cat(chunks)
            n = per_example.shape[0]
            stream = stream_name(f"{method}/{metric}", epoch)
            if per_example.dim() == 1:
                ci = metrics.bootstrap_ci(per_example, keys["seed"], stream)
                rows.append(metric_row(metric, float(per_example.mean()), n, method=method, epoch=epoch,
                                       ci=(float(ci[0]), float(ci[1])), **keys))
                continue
            zeros = torch.cat(self.zeros[(method, metric, epoch)]).sum(0)
            tested = n * self.cases_per_example[(method, metric, epoch)]
            low, high = metrics.bootstrap_ci(per_example, keys["seed"], stream)
            mean_low, mean_high = metrics.bootstrap_ci(per_example.mean(1), keys["seed"], stream)
            rows += layer_rows(metric, per_example.mean(0).tolist(), n, method=method, epoch=epoch,
                               cis=list(zip(low.tolist(), high.tolist(), strict=True)),
                               mean_ci=(float(mean_low), float(mean_high)), **keys)
            rows += layer_rows(f"{metric}_zero_count", zeros.double().tolist(), tested, method=method, epoch=epoch,
                               **keys)
        for name, hidden in self.masked_keys.items():
            rows += layer_rows("masked_key_count", hidden.double().tolist(), self.test_keys[name], method=name,
                               epoch=self.masked_key_epochs[name], **keys)
        return rows + self.baseline_rows(keys)

    def example_rows(self) -> list[dict[str, Any]]:
        """Each score's per-example value (its mean over layers) at the epochs the tables read: measured without
        training, or its method's last recorded epoch (rows of the store's EXAMPLE_SCORES_SCHEMA)."""
        last: dict[tuple[str, str], int] = {}
        for method, metric, epoch in self.values:
            if epoch is not None:
                last[(method, metric)] = max(epoch, last.get((method, metric), epoch))
        rows = []
        for (method, metric, epoch) in self.values:
            if epoch != last.get((method, metric)):
                continue
            values = self._example_means((method, metric, epoch))
            rows += [{"method": method, "metric": metric, "epoch": epoch, "example": i, "value": float(v)}
                     for i, v in enumerate(values.tolist())]
        return rows

    def _example_means(self, key: Key) -> torch.Tensor | None:
        chunks = self.values.get(key)
        if chunks is None:
            return None
        values = torch.cat(chunks)
        return values if values.dim() == 1 else values.mean(1)

    def baseline_rows(self, keys: dict[str, Any]) -> list[dict[str, Any]]:
        """Paired comparisons of a score with each baseline computed on the same examples: the per-example
        difference of their layer means, its mean and its 95% bootstrap interval, as metric ``<score>_vs_<name>``
        (method: the FT method; epoch: the score's). A score beats its baseline where the interval lies above 0. A
        baseline measured without training (epoch None) serves every epoch."""
        rows = []
        for (method, metric, epoch) in list(self.values):
            for name, (baseline_method, baseline_metric) in BASELINES.get(metric, {}).items():
                other = baseline_method or method
                if other == method and baseline_metric == metric:
                    continue  # the noise floor is not compared with itself
                baseline = self._example_means((other, baseline_metric, epoch))
                if baseline is None:
                    baseline = self._example_means((other, baseline_metric, None))
                if baseline is None:
                    continue
                difference = self._example_means((method, metric, epoch)) - baseline
                stream = stream_name(f"{method}/{metric}_vs_{name}", epoch)
                ci = metrics.bootstrap_ci(difference, keys["seed"], stream)
                rows.append(metric_row(f"{metric}_vs_{name}", float(difference.mean()), difference.numel(),
                                       method=method, epoch=epoch, ci=(float(ci[0]), float(ci[1])), **keys))
        return rows


class PassOutputs:
    """Each pass's label-candidate scores and full-vocabulary argmax, batch by batch, keyed by (pass, epoch)."""

    def __init__(self) -> None:
        self.candidate: dict[tuple[str, int | None], list[torch.Tensor]] = {}
        self.fullvocab: dict[tuple[str, int | None], list[torch.Tensor]] = {}

    def add(self, name: str, epoch: int | None, scores: BatchScores) -> None:
        self.candidate.setdefault((name, epoch), []).append(scores.candidate_logprobs.cpu())
        self.fullvocab.setdefault((name, epoch), []).append(metrics.label_predictions(scores.next_token_logprobs).cpu())


def accuracy_and_predictions(prompts: Prompts, outputs: PassOutputs, methods: list[str], final_epoch: int,
                             keys: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Label-word and full-vocabulary accuracy per pass and epoch (and of always predicting the most frequent label,
    under method "majority"), Rec2FTP per method and epoch, per-example predictions (FT: at the final epoch)."""
    gold = torch.tensor([q.gold for q in prompts.queries])
    gold_first = torch.tensor([prompts.label_ids[q.gold][0] for q in prompts.queries])
    n = len(gold)
    rows = [metric_row("accuracy", metrics.majority_accuracy(gold), n, method="majority", epoch=None, **keys)]
    predictions, correct = [], {}
    for (name, epoch), chunks in outputs.candidate.items():
        candidate = torch.cat(chunks)
        fullvocab = torch.cat(outputs.fullvocab[(name, epoch)])
        predicted = metrics.label_predictions(candidate)
        correct[(name, epoch)] = predicted == gold
        fullvocab_correct = fullvocab == gold_first
        for metric, value, hits in (("accuracy", metrics.accuracy(predicted, gold), correct[(name, epoch)]),
                                    ("fullvocab_accuracy", metrics.accuracy(fullvocab, gold_first), fullvocab_correct)):
            ci = metrics.bootstrap_ci(hits.double(), keys["seed"], stream_name(f"{name}/{metric}", epoch))
            rows.append(metric_row(metric, value, n, method=name, epoch=epoch, ci=ci, **keys))
        if epoch in (None, final_epoch):
            predictions += [{
                "example": i, "method": name, "gold": int(gold[i]), "prediction": int(predicted[i]),
                "correct": bool(correct[(name, epoch)][i]), "candidate_logprobs": candidate[i].tolist(),
                "fullvocab_token": int(fullvocab[i]), "fullvocab_correct": bool(fullvocab_correct[i]),
            } for i in range(n)]
    zs, icl = correct[("zs", None)], correct[("icl", None)]
    zs_wrong, icl_fixes = ~zs, ~zs & icl
    chance_ci = metrics.bootstrap_ratio_ci(icl_fixes * 100.0, zs_wrong, keys["seed"], "rec2ftp_chance")
    for (name, epoch), ft in correct.items():
        if name not in methods:
            continue
        r = metrics.rec2ftp(zs, icl, ft)
        ft_fixes = zs_wrong & ft
        ci = metrics.bootstrap_ratio_ci((ft_fixes & icl_fixes) * 100.0, ft_fixes, keys["seed"],
                                        stream_name(f"{name}/rec2ftp", epoch))
        rows.append(metric_row("rec2ftp", r.value, r.count, method=name, epoch=epoch, ci=ci, **keys))
        rows.append(metric_row("rec2ftp_chance", r.chance, r.chance_count, method=name, epoch=epoch, ci=chance_ci,
                               **keys))
    return rows, predictions


def grad_norm_rows(grad_norms: dict[str, torch.Tensor], keys: dict[str, Any]) -> list[dict[str, Any]]:
    """Deutch et al. Fig. 4: the per-layer gradient norm before step j, as metric `grad_norm_step{j}` (epoch null:
    the steps of the first epoch)."""
    rows = []
    for method, norms in grad_norms.items():
        for step, per_layer in enumerate(norms.tolist()):
            rows += [metric_row(f"grad_norm_step{step}", v, 1, method=method, layer=layer, epoch=None, **keys)
                     for layer, v in enumerate(per_layer)]
    return rows


def compact_captures(indices: list[int], captures: dict[str, Capture], full: bool) -> dict[str, torch.Tensor]:
    """One batch's captures, named like TransformerLens hooks: ``{pass}.blocks.{l}.attn_out`` [B, d_model],
    ``{pass}.blocks.{l}.attn_scores`` [B, H, T] (pre-softmax, analysis row, test tokens; ``{pass}.test_length``
    says how many are real); with ``full`` also ``{pass}.blocks.{l}.q`` and ``icl.blocks.{l}.demo_attn_scores``.
    Kept in float32, the precision the metrics were computed from, so that they recompute exactly."""
    out = {"example": torch.tensor(indices)}
    for name, c in captures.items():
        name = name.replace(":", ".")
        out[f"{name}.test_length"] = c.test_length
        for layer in range(c.attention_output.shape[1]):
            block = f"{name}.blocks.{layer}"
            out[f"{block}.attn_out"] = c.attention_output[:, layer]
            out[f"{block}.attn_scores"] = c.presoftmax_logits[:, layer]
            if full:
                out[f"{block}.q"] = c.analysis_query[:, layer]
                if c.demo_logits is not None:
                    out[f"{block}.demo_attn_scores"] = c.demo_logits[:, layer]
    return out
