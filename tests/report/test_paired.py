"""Paired tests against baselines across units, from the per-example scores: hand-set values on three examples."""

import pyarrow.parquet as pq
import pytest

from iclgd.report.paired import PairedScores, paired_interval
from iclgd.report.tables import paper_table, summary_rows
from iclgd.runner import UnitResult, layer_rows, metric_row, open_results, write_unit
from tests.report.test_cli import invoke

# Per example (3): a trained unit's SimAOU_norm beside its within-unit baselines, and two untrained variants: one
# scoring exactly as high (not beaten), one scoring 0 (beaten).
TRAINED = {("gd", "simaou_norm"): [0.3, 0.4, 0.5], ("icl", "simaou_norm_random"): [0.0, 0.0, 0.0],
           ("gd", "simaou_norm_random_direction"): [0.1, 0.1, 0.1]}
UNTRAINED = {"untrained:all": [0.3, 0.4, 0.5], "untrained:trained_embeddings": [0.0, 0.0, 0.0]}
SHIFT = {1: (0.0, 0.0, 0.0), 2: (0.1, -0.1, 0.0), 3: (0.1, 0.1, 0.1)}  # of the trained scores, per seed


def _write(out, seed: int, variant: str, scores: dict[tuple[str, str], list[float]],
           shift: tuple[float, ...] = (0.0, 0.0, 0.0), config: dict | None = None) -> None:
    keys = dict(model="m", variant=variant, task="t", template=0, seed=seed, order=0, k=4, true_k=4)
    rows = [metric_row("accuracy", 0.5, 3, method="zs", **keys), metric_row("accuracy", 0.9, 3, method="icl", **keys)]
    examples = []
    for (method, metric), values in scores.items():
        values = [v + d for v, d in zip(values, shift, strict=True)]
        rows += layer_rows(metric, [sum(values) / 3] * 2, 3, method=method, **keys)
        examples += [{"method": method, "metric": metric, "epoch": None, "example": i, "value": v}
                     for i, v in enumerate(values)]
    untrained = None if variant == "trained" else variant.removeprefix("untrained:")
    write_unit(out, f"s{seed}-{variant.replace(':', '_')}", {"seed": seed, "untrained": untrained, **(config or {})},
               UnitResult(metrics=rows, predictions=[], example_scores=examples))


@pytest.fixture
def results(tmp_path):
    for seed, shift in SHIFT.items():
        _write(tmp_path, seed, "trained", TRAINED, shift)
        for variant, values in UNTRAINED.items():
            _write(tmp_path, seed, variant, {("gd", "simaou_norm"): values})
    return tmp_path


def test_each_trained_unit_against_each_untrained_variant_on_the_same_examples(results):
    tests = {(t.keys["seed"], t.variant): t for t in PairedScores(open_results(results)).variant_tests()}
    assert set(tests) == {(s, v) for s in SHIFT for v in UNTRAINED}
    same = tests[(1, "untrained:all")]
    assert (same.unit, same.baseline_unit, same.method, same.metric, same.n) == (
        "s1-trained", "s1-untrained_all", "gd", "simaou_norm", 3)
    assert same.difference == pytest.approx(0.0) and same.ci == pytest.approx((0.0, 0.0)) and not same.beats
    above = tests[(1, "untrained:trained_embeddings")]
    assert (above.score, above.baseline, above.difference) == pytest.approx((0.4, 0.0, 0.4))
    assert 0.3 <= above.ci[0] < above.ci[1] <= 0.5 and above.beats
    assert tests[(3, "untrained:all")].difference == pytest.approx(0.1) and tests[(3, "untrained:all")].beats
    assert tests[(2, "untrained:all")].difference == pytest.approx(0.0) and not tests[(2, "untrained:all")].beats


def test_pooled_interval_is_the_bootstrap_of_the_concatenated_differences():
    import torch

    from iclgd import metrics

    a, b = torch.tensor([0.1, 0.2]), torch.tensor([0.3])
    mean, ci = paired_interval([a, b], 7, "s")
    low, high = metrics.bootstrap_ci(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), 7, "s")
    assert mean == pytest.approx(0.2) and ci == pytest.approx((float(low), float(high)))


def test_tables_mark_a_score_an_untrained_variant_matches(results):
    con = open_results(results)
    paired = PairedScores(con)
    assert paired.below_baseline(["s1-trained"], "gd", "simaou_norm")  # untrained:all scores as high
    assert not paired.below_baseline(["s3-trained"], "gd", "simaou_norm")  # 0.1 above it on every example
    assert paired.below_baseline(["s1-trained", "s2-trained"], "gd", "simaou_norm")  # pooled: 0, 0, 0, .1, -.1, 0
    one = {row["seed"]: row["SimAOU_norm"] for row in summary_rows(con, where="variant = 'trained'")}
    assert one[1].below_baseline and not one[3].below_baseline and one[1].text().startswith("0.400†")
    group = summary_rows(con, over=("seed",), where="variant = 'trained' AND seed < 3")[0]["SimAOU_norm"]
    assert group.n == 2 and group.below_baseline and group.text() == "0.400† ± 0.000"
    assert "† not above a baseline" in str(paper_table(con, "deutch2024").caption)


def test_report_prints_the_tests_and_stores_them(results):
    """The file holds the whole folder's tests; a --where report prints its own and leaves the file as it is."""
    result = invoke("report", results, "--where", "seed = 3")
    assert result.exit_code == 0, result.output
    assert "Paired tests against the untrained variants" in result.output and "+0.100 [+0.100, +0.100]" in result.output
    assert not (results / "_tables").exists()
    assert invoke("report", results).exit_code == 0
    stored = pq.read_table(results / "_tables" / "untrained_tests.parquet").to_pylist()
    assert {(t["seed"], t["variant"], t["beats"]) for t in stored if t["seed"] == 3} == {
        (3, "untrained:all", True), (3, "untrained:trained_embeddings", True)}
    assert {t["seed"] for t in stored} == {1, 2, 3}
    assert invoke("report", results, "--where", "seed = 3").exit_code == 0
    assert pq.read_table(results / "_tables" / "untrained_tests.parquet").to_pylist() == stored
    open_results(results)  # the tables folder is not mistaken for a unit


def test_untrained_rows_baseline_columns_and_other_configs_are_not_paired(results, tmp_path):
    """An untrained unit is not its own baseline, a baseline column is not tested, and an untrained unit of another
    config (here other FT methods) is not a variant of the trained one."""
    con = open_results(results)
    rows = {(row["seed"], row["variant"]): row for row in summary_rows(con)}
    assert not rows[(1, "untrained:all")]["SimAOU_norm"].below_baseline
    assert not rows[(1, "trained")]["SimAOU_norm rand-dir"].below_baseline
    other = tmp_path / "other"
    _write(other, 3, "trained", TRAINED, SHIFT[3])
    _write(other, 3, "untrained:all", {("gd", "simaou_norm"): [1.0, 1.0, 1.0]}, config={"methods": ["lcgd"]})
    assert PairedScores(open_results(other)).variant_tests() == []


def test_a_variant_run_on_another_device_batch_size_or_captures_is_still_paired(tmp_path):
    """Where and how fast a unit ran does not change its eval examples: the variant is still the trained unit's."""
    _write(tmp_path, 3, "trained", TRAINED, SHIFT[3], config={"batch_size": 16, "device": "cpu"})
    _write(tmp_path, 3, "untrained:all", {("gd", "simaou_norm"): [0.0, 0.0, 0.0]},
           config={"batch_size": 4, "device": "cuda", "captures": "none"})
    (test,) = PairedScores(open_results(tmp_path)).variant_tests()
    assert test.variant == "untrained:all" and test.difference == pytest.approx(0.5)
