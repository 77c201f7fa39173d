"""Paired tests of a similarity score against its baselines, across units, from the per-example scores.

A unit stores the per-example value behind each score (``example_scores``). Two baselines need them:

- the **untrained variants** (Deutch et al.): the unit of an untrained model with the same config (but the variant
  and the lr it inherits) is scored on the same eval examples, so ``score(trained) − score(untrained)`` has a paired
  bootstrap interval over those examples (:func:`variant_tests`, one per trained unit, method, score and variant);
- a **group of units** (seeds, orders): the paired differences of every unit of the group, pooled, against each
  baseline (the within-unit ones of ``iclgd.experiments.accumulate.BASELINES`` and the untrained variants), for the
  marks on mean ± std cells (:meth:`PairedScores.below_baseline`).

A score beats a baseline where the 95% interval of the mean difference lies above 0. Intervals are seeded by the
(first) trained unit's seed and the stream ``<method>/<score>_vs_<baseline>`` (and its epoch after the first), so
one unit's within-unit test equals the one its own metrics table holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import torch
from rich.console import Console
from rich.table import Table

from iclgd import metrics
from iclgd.experiments.accumulate import BASELINES, stream_name
from iclgd.experiments.config import NOT_SETTINGS
from iclgd.runner.results import query
from iclgd.runs import atomic_file, write_parquet_table

# Scores where more means more alike (KL and JS, where more means further apart, are not tested here).
COMPARED = ("simaou_norm", "simaou", "simam", "simam_delta", "kendall", "to@10", "ocs@10")
GROUP_KEYS = ("model", "task", "template", "k", "seed", "order")  # what a trained unit and its variants share
TESTS_FILE = "_tables/untrained_tests.parquet"  # in a results folder: the tests against the untrained variants
# Config fields in which a trained unit and its variants may differ: the variant, the lr (inherited), and NOT_SETTINGS
# (the eval examples are the same whatever the device or batch size).
PAIRING_IGNORES = ("untrained", "lr", *NOT_SETTINGS)


@dataclass
class VariantTest:
    """score(trained unit) − score(untrained unit) on the same eval examples: mean and its 95% bootstrap interval."""

    unit: str
    baseline_unit: str
    variant: str  # the baseline's, e.g. "untrained:all"
    keys: dict[str, Any]  # GROUP_KEYS of both
    method: str
    metric: str
    score: float
    baseline: float
    difference: float
    ci: tuple[float, float]
    n: int

    @property
    def beats(self) -> bool:
        return self.ci[0] > 0


def pairing_key(config: dict[str, Any]) -> str:
    """What a trained unit and its untrained variants share: the whole config but the variant, the lr (an untrained
    unit inherits its trained unit's), the results folder, the device, the batch size and the captures kept."""
    return json.dumps({k: v for k, v in config.items() if k not in PAIRING_IGNORES}, sort_keys=True, default=str)


def paired_interval(differences: Sequence[torch.Tensor], seed: int, stream: str) -> tuple[float, tuple[float, float]]:
    """Mean of the pooled per-example ``differences`` and its 95% bootstrap interval (resampling the pooled pairs)."""
    pooled = torch.cat([d.double().flatten() for d in differences])
    low, high = metrics.bootstrap_ci(pooled, seed, stream)
    return float(pooled.mean()), (float(low), float(high))


class PairedScores:
    """The per-example scores of a results folder (the COMPARED scores and their baselines), by unit."""

    def __init__(self, con: duckdb.DuckDBPyConnection, where: str | None = None) -> None:
        """``where``: which trained units :meth:`variant_tests` tests (their baselines are found among all units)."""
        from iclgd.report.tables import where_clause

        columns, rows = query(con, 'SELECT DISTINCT unit, variant, model, task, template, k, seed, "order" '
                                   "FROM metrics")
        self.keys = {row[0]: dict(zip(columns[1:], row[1:], strict=True)) for row in rows}
        _, records = query(con, "SELECT unit, record FROM units")
        for unit, record in records:
            if unit in self.keys:
                self.keys[unit]["config"] = pairing_key(json.loads(record).get("config") or {})
        _, rows = query(con, f"SELECT DISTINCT unit FROM metrics WHERE {where_clause(where)}")
        self.selected = {unit for (unit,) in rows}
        names = sorted({*COMPARED, *(m for b in BASELINES.values() for _, m in b.values())})
        _, scores = query(con, "SELECT unit, method, metric, epoch, example, value FROM example_scores WHERE metric IN "
                               f"({', '.join('?' for _ in names)}) ORDER BY unit, method, metric, example", names)
        self.values: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}  # -> (examples, values)
        self.epochs: dict[tuple[str, str, str], int | None] = {}
        chunks: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
        for unit, method, metric, epoch, example, value in scores:
            chunks.setdefault((unit, method, metric), []).append((example, value))
            self.epochs[(unit, method, metric)] = epoch
        for key, pairs in chunks.items():
            examples, values = zip(*pairs, strict=True)
            self.values[key] = torch.tensor(examples), torch.tensor(values, dtype=torch.float64)

    def _variants_of(self, unit: str) -> list[str]:
        """The untrained units of a trained ``unit``: the same config but for the variant (and the lr they inherit),
        so scored on the same examples; none for an untrained unit."""
        mine = self.keys[unit]
        if mine["variant"] != "trained":
            return []
        return sorted(u for u, keys in self.keys.items() if keys["variant"] != "trained" and
                      keys["config"] == mine["config"] and all(keys[k] == mine[k] for k in GROUP_KEYS))

    def _pair(self, a: tuple[str, str, str], b: tuple[str, str, str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The values of a and b on the examples both have, in example order (None if either is missing or they
        share none)."""
        if a not in self.values or b not in self.values:
            return None
        (ea, va), (eb, vb) = self.values[a], self.values[b]
        if torch.equal(ea, eb):
            return va, vb
        common = sorted(set(ea.tolist()) & set(eb.tolist()))
        if not common:
            return None
        where_a = {e: i for i, e in enumerate(ea.tolist())}
        where_b = {e: i for i, e in enumerate(eb.tolist())}
        return va[[where_a[e] for e in common]], vb[[where_b[e] for e in common]]

    def _difference(self, a: tuple[str, str, str], b: tuple[str, str, str]) -> torch.Tensor | None:
        """Per-example a − b over the examples both have."""
        pair = self._pair(a, b)
        return None if pair is None else pair[0] - pair[1]

    def variant_tests(self) -> list[VariantTest]:
        """Every trained unit's COMPARED scores against each of its untrained variants, per FT method."""
        tests = []
        for unit in sorted(u for u, keys in self.keys.items() if keys["variant"] == "trained" and u in self.selected):
            for other in self._variants_of(unit):
                variant = self.keys[other]["variant"]
                for (u, method, metric) in sorted(k for k in self.values if k[0] == unit and k[2] in COMPARED):
                    pair = self._pair((u, method, metric), (other, method, metric))
                    if pair is None:
                        continue
                    mean, ci = paired_interval([pair[0] - pair[1]], self.keys[unit]["seed"],
                                               self._stream(unit, method, metric, variant))
                    tests.append(VariantTest(unit, other, variant, {k: self.keys[unit][k] for k in GROUP_KEYS},
                                             method, metric, float(pair[0].mean()), float(pair[1].mean()), mean, ci,
                                             pair[0].numel()))
        return tests

    def below_baseline(self, units: Sequence[str], method: str, metric: str) -> bool:
        """Whether the score, pooled over ``units`` (each paired with its own baselines), fails to beat one of its
        baselines: a within-unit one, or an untrained variant (pooled over the units that have it)."""
        units = [u for u in units if (u, method, metric) in self.values]
        if not units:
            return False
        seed = self.keys[units[0]]["seed"]
        pairs: dict[str, list[torch.Tensor]] = {}
        for unit in units:
            for name, (baseline_method, baseline_metric) in BASELINES.get(metric, {}).items():
                baseline = (unit, baseline_method or method, baseline_metric)
                if baseline == (unit, method, metric):
                    continue
                difference = self._difference((unit, method, metric), baseline)
                if difference is not None:
                    pairs.setdefault(name, []).append(difference)
            for other in self._variants_of(unit):
                difference = self._difference((unit, method, metric), (other, method, metric))
                if difference is not None:
                    pairs.setdefault(self.keys[other]["variant"], []).append(difference)
        return any(paired_interval(differences, seed, self._stream(units[0], method, metric, name))[1][0] <= 0
                   for name, differences in pairs.items())

    def _stream(self, unit: str, method: str, metric: str, baseline: str) -> str:
        return stream_name(f"{method}/{metric}_vs_{baseline}", self.epochs[(unit, method, metric)])


def variant_test_table(tests: Sequence[VariantTest]) -> Table:
    """One row per trained unit, FT method, score and untrained variant: both scores and the paired difference with
    its interval; † where the trained model's score does not beat the untrained one's."""
    varying = [key for key in GROUP_KEYS if len({str(t.keys[key]) for t in tests}) > 1] or ["task"]
    constant = [f"{key}={tests[0].keys[key]}" for key in GROUP_KEYS if key not in varying] if tests else []
    table = Table(title="Paired tests against the untrained variants: score(trained) − score(untrained) on the same "
                        "eval examples (means over layers) [95% bootstrap CI]",
                  caption="; ".join(constant) + ("\n† the trained model's score does not beat the untrained one's: "
                                                 "the interval does not lie above 0"))
    for name in (*varying, "FT", "score", "untrained variant"):
        table.add_column(name, no_wrap=True)
    for name in ("trained", "untrained", "Δ [95% CI]"):
        table.add_column(name, justify="right")
    for t in tests:
        mark = "" if t.beats else "†"
        table.add_row(*[str(t.keys[key]) for key in varying], t.method, t.metric, t.variant.removeprefix("untrained:"),
                      f"{t.score:.3f}", f"{t.baseline:.3f}",
                      f"{t.difference:+.3f}{mark} [{t.ci[0]:+.3f}, {t.ci[1]:+.3f}]")
    return table


def write_variant_tests(tests: Sequence[VariantTest], path: str | Path) -> Path:
    """The tests as one Parquet table (unit, baseline_unit, variant, the GROUP_KEYS, method, metric, score,
    baseline, difference, ci_low, ci_high, count, beats), written atomically."""
    rows = [{"unit": t.unit, "baseline_unit": t.baseline_unit, "variant": t.variant, **t.keys, "method": t.method,
             "metric": t.metric, "score": t.score, "baseline": t.baseline, "difference": t.difference,
             "ci_low": t.ci[0], "ci_high": t.ci[1], "count": t.n, "beats": t.beats} for t in tests]
    with atomic_file(path) as tmp:
        write_parquet_table(pa.Table.from_pylist(rows), tmp)
    return Path(path)


def report_variant_tests(con: duckdb.DuckDBPyConnection, terminal: Console, out: str | Path,
                         where: str | None = None) -> list[Path]:
    """Print the paired tests against the untrained variants and write them to ``<out>/`` TESTS_FILE, where the
    results hold trained units beside untrained ones; returns the written file (none without untrained units). With
    a ``where`` filter they are printed only: the file holds the whole folder's tests, not one filter's."""
    tests = PairedScores(con, where).variant_tests()
    if not tests:
        return []
    terminal.print(variant_test_table(tests))
    return [] if where else [write_variant_tests(tests, Path(out) / TESTS_FILE)]
