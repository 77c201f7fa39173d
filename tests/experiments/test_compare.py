"""One compare unit end to end on a tiny model and task fixtures: tables, record, determinism, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iclgd.errors import UserError
from iclgd.experiments.compare import run_compare
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.run import run_and_store
from iclgd.models.tiny import save_tiny_model
from iclgd.tasks import FIXTURES_DIR


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("tiny") / "gpt2")


def _cfg(model, tmp_path, **kw):
    fields = dict(model=str(model), task="sst2", data_dir=str(FIXTURES_DIR), shots=4, seed=1, eval_size=6,
                  lr=1e-2, methods=["gd", "lcgd"], kendall_examples=3, batch_size=4, out=str(tmp_path / "out"))
    fields.update(kw)
    return CompareConfig(**fields)


def _values(result):
    return {(r["method"], r["metric"], r["layer"]): r["value"] for r in result.metrics}


def test_unit_tables_record_and_determinism(gpt2_dir, tmp_path):
    cfg = _cfg(gpt2_dir, tmp_path)
    first = run_compare(cfg, show_progress=False)
    values = _values(first)
    n_layers = 2
    for method, metric in [("zs", "accuracy"), ("icl", "accuracy"), ("gd", "accuracy"), ("gd", "rec2ftp"),
                           ("gd", "rec2ftp_chance"), ("icl", "simam_before"), ("icl", "simaou_norm_random")]:
        assert (method, metric, None) in values, (method, metric)
    for method in ("gd", "lcgd"):
        for metric in ("simaou_norm", "simaou", "simam", "simam_delta"):
            per_layer = [values[(method, metric, layer)] for layer in range(n_layers)]
            assert values[(method, metric, None)] == pytest.approx(sum(per_layer) / n_layers)
            assert all(-1.0 <= v <= 1.0 for v in per_layer)
            assert (method, f"{metric}_zero_count", None) in values
    assert ("gd", "kendall", None) in values and ("gd", "kendall_random", None) in values
    assert ("gd", "simaou_norm_random_direction", None) in values
    assert ("lcgd_vs_gd", "alpha", None) in values
    assert ("gd", "grad_norm_step0", 0) in values
    # per-example predictions for every pass
    methods = {p["method"] for p in first.predictions}
    assert methods == {"zs", "icl", "gd", "lcgd"}
    assert len(first.predictions) == 4 * 6
    record = first.record
    assert record["analysis_position"] == "label_token" and record["lr"] == 1e-2 and record["lr_source"] == "config"
    assert record["true_k"] <= 4 and len(record["demo_rows"]) == record["true_k"]
    assert set(record["versions"]) >= {"iclgd", "torch", "transformers"}
    # same config twice on CPU: identical values
    again = _values(run_compare(cfg, show_progress=False))
    assert again.keys() == values.keys()
    assert all(again[k] == values[k] or (again[k] != again[k] and values[k] != values[k]) for k in values)


def test_prompt_end_position_and_store(gpt2_dir, tmp_path):
    cfg = _cfg(gpt2_dir, tmp_path, position="prompt_end", methods=["gd"], kendall_examples=0)
    unit_dir = run_and_store(cfg, show_progress=False)
    record = json.loads((unit_dir / "record.json").read_text())
    assert record["analysis_position"] == "prompt_end"
    table = pq.read_table(unit_dir / "metrics.parquet").to_pylist()
    assert {r["unit"] for r in table} == {cfg.unit_id()}
    assert any(r["metric"] == "simam_delta" and r["layer"] is None for r in table)
    assert (unit_dir / "predictions.parquet").is_file()
    assert list((unit_dir / "captures").glob("*.safetensors"))


def test_order_changes_prefix_but_not_demo_set(gpt2_dir, tmp_path):
    a = run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd"], order=0), show_progress=False).record
    b = run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd"], order=1), show_progress=False).record
    assert sorted(a["demo_rows"]) == sorted(b["demo_rows"])
    assert b["demo_rows"] == [a["demo_rows"][i] for i in b["order_permutation"]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(task="no-such-task"), "unknown task"),
        (dict(shots=10_000), "pool"),
        (dict(template="Sentence without a field Label:"), "placeholder"),
        (dict(max_context=12), "no demonstration fits"),
    ],
)
def test_bad_input_is_a_user_error(gpt2_dir, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        run_compare(_cfg(gpt2_dir, tmp_path, **overrides), show_progress=False)


def test_cli_bad_input_exit_2_and_nothing_written(gpt2_dir, tmp_path):
    out = tmp_path / "out"
    for args in (["--model", str(tmp_path / "not-a-model"), "--task", "sst2"],
                 ["--model", str(gpt2_dir), "--task", "sst2", "--data-dir", str(FIXTURES_DIR), "--shots", "9999"]):
        proc = subprocess.run([sys.executable, "-m", "iclgd", "compare", *args, "--out", str(out), "--lr", "0.01"],
                              capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
        assert not out.exists()


def test_metrics_recompute_from_saved_activations(gpt2_dir, tmp_path):
    from iclgd import metrics
    from iclgd.experiments.captures import load_captures

    cfg = _cfg(gpt2_dir, tmp_path, methods=["gd"], save_activations=True, kendall_examples=0)
    unit_dir = run_and_store(cfg, show_progress=False)
    zs, icl, gd = (load_captures(unit_dir, p) for p in ("zs", "icl", "gd"))
    assert zs.attention_output.shape[:2] == (6, 2) and icl.demo_logits is None
    table = pq.read_table(unit_dir / "metrics.parquet").to_pylist()
    stored = {(r["metric"], r["layer"]): r["value"] for r in table if r["method"] == "gd"}
    recomputed = metrics.simaou(icl.attention_output, zs.attention_output, gd.attention_output)
    assert recomputed.per_layer == pytest.approx([stored[("simaou", layer)] for layer in range(2)], abs=1e-6)
    delta = metrics.simam_delta(icl.presoftmax_logits, zs.presoftmax_logits, gd.presoftmax_logits, zs.test_length)
    assert delta.per_layer == pytest.approx([stored[("simam_delta", layer)] for layer in range(2)], abs=1e-6)


def test_cli_eval_size_above_the_split_is_said_and_recorded_and_stale_tmp_is_cleaned(tmp_path):
    """One stderr warning (not a silent clamp), the real eval size in the record; the temporary folder of a
    compare killed while writing is removed by the next compare on that folder."""
    shipped = Path(__file__).resolve().parents[2] / "src" / "iclgd" / "assets" / "icc-gpt2"
    out = tmp_path / "out"
    stale = out / ".tmp-some-unit-999999999"
    stale.mkdir(parents=True)
    (stale / "metrics.parquet").write_bytes(b"partial")
    proc = subprocess.run([sys.executable, "-m", "iclgd", "compare", "--model", str(shipped), "--task", "icc-heldout",
                           "--shots", "4", "--lr", "0.01", "--method", "gd", "--kendall-examples", "0",
                           "--batch-size", "100", "--eval-size", "100000", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: eval_size 100000") and "200 rows" in lines[0]
    (unit_dir,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    record = json.loads((unit_dir / "record.json").read_text())
    assert record["eval_size"] == 200 and record["config"]["eval_size"] == 100000
    assert not stale.exists()
