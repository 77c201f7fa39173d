"""One compare unit end to end on a tiny model and task fixtures: tables, record, determinism, bad input."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from iclgd.errors import UserError
from iclgd.experiments.compare import run_compare
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.run import run_and_store
from iclgd.experiments.sweep import check_units
from iclgd.finetune import DAI_LR_GRID, HALF_DECADE_GRID
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



def test_two_template_strings_are_two_conditions_never_pooled_as_seeds(gpt2_dir, tmp_path):
    """A template string of one's own keys its rows by a stable id of its text: two strings (same seed) are two
    rows of a table pooled over seeds, and the same string run again keys the same."""
    from iclgd.report import summary_rows
    from iclgd.runner import open_results
    from iclgd.tasks import template_key

    templates = ["Text: {sentence} Mood:", "Input: {sentence} Answer:"]
    for template in templates:
        run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"], kendall_examples=0, template=template),
                      show_progress=False)
    con = open_results(tmp_path / "out")
    keys = {t for (t,) in con.execute("SELECT DISTINCT template FROM metrics").fetchall()}
    assert keys == {template_key(t) for t in templates} and all(key < 0 for key in keys)
    assert template_key(templates[0]) == template_key("Text: {sentence} Mood:") and template_key(2) == 2
    rows = summary_rows(con, over=("seed",))
    assert sorted(row["template"] for row in rows) == sorted(keys)

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


def test_every_stored_similarity_recomputes_from_the_default_captures(gpt2_dir, tmp_path):
    """The captures a unit keeps by default reproduce its stored metrics (float16 captures did not: SimAM_Δ's
    small Δs cancel), the random baselines included (their draws depend on (seed, example) only)."""
    from iclgd import metrics
    from iclgd.experiments.captures import load_captures

    cfg = _cfg(gpt2_dir, tmp_path, methods=["gd", "lcgd"], kendall_examples=0)
    unit_dir = run_and_store(cfg, show_progress=False)
    zs, icl, gd, lcgd, rand = (load_captures(unit_dir, p) for p in ("zs", "icl", "gd", "lcgd", "gd:random_direction"))
    assert zs.attn_out.shape[:2] == (6, 2) and icl.demo_attn_scores is None and icl.q is None
    assert torch.equal(zs["blocks.1.attn_out"], zs.attn_out[:, 1])
    table = pq.read_table(unit_dir / "metrics.parquet").to_pylist()
    stored = {(r["method"], r["metric"], r["layer"]): r["value"] for r in table}
    h = {name: c.attn_out for name, c in (("zs", zs), ("icl", icl), ("gd", gd), ("rand", rand))}
    m = {name: c.attn_scores for name, c in (("zs", zs), ("icl", icl), ("gd", gd), ("lcgd", lcgd))}
    lengths = zs.test_length
    u = metrics.uniform_per_example(cfg.seed, zs.example.tolist(), h["icl"].shape[1:], "simaou_random")
    recomputed = {
        ("gd", "simaou"): metrics.simaou(h["icl"], h["zs"], h["gd"]),
        ("gd", "simaou_norm"): metrics.simaou_norm(h["icl"], h["zs"], h["gd"]),
        ("gd", "simam"): metrics.simam(m["icl"], m["gd"], lengths),
        ("gd", "simam_delta"): metrics.simam_delta(m["icl"], m["zs"], m["gd"], lengths),
        ("lcgd", "simam_delta"): metrics.simam_delta(m["icl"], m["zs"], m["lcgd"], lengths),
        ("icl", "simam_before"): metrics.simam_before_ft(m["icl"], m["zs"], lengths),
        ("icl", "simaou_norm_random"): metrics.simaou_random(h["icl"], h["zs"], u, normalised=True),
        ("gd", "simaou_random_direction"): metrics.simaou_better_random(h["icl"], h["zs"], h["rand"], False),
        ("lcgd_vs_gd", "alpha"): metrics.alpha(m["lcgd"], m["gd"], m["zs"], lengths),
    }
    for (method, metric), result in recomputed.items():
        expected = [stored[(method, metric, layer)] for layer in range(2)]
        assert result.per_layer == pytest.approx(expected, abs=1e-9), (method, metric)


def test_full_captures_keep_queries_and_none_keeps_nothing(gpt2_dir, tmp_path):
    from iclgd.experiments.captures import load_captures

    full = run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"], captures="full", out=str(tmp_path / "a")),
                         show_progress=False)
    icl = load_captures(full, "icl")
    assert icl.q is not None and icl.demo_attn_scores is not None and icl.demo_attn_scores.shape[0] == 6
    # Kendall recomputes from them, as the captures module shows: the first kendall_examples (3) examples
    from iclgd import metrics
    from iclgd.experiments.captures import load_train_queries

    q_train, gd = load_train_queries(full, "gd"), load_captures(full, "gd")
    assert q_train.shape[:2] == (2, icl.demo_attn_scores.shape[-1])
    tau = metrics.kendall(icl.demo_attn_scores[:3], metrics.ft_demo_logits(gd.q[:3], q_train))
    stored = {r["layer"]: r["value"] for r in pq.read_table(full / "metrics.parquet").to_pylist()
              if r["method"] == "gd" and r["metric"] == "kendall"}
    assert tau.per_layer == pytest.approx([stored[0], stored[1]], abs=1e-12)
    with pytest.raises(UserError, match=r"no training queries of 'lcgd': they are kept for Dai's FT only \(gd or "):
        load_train_queries(full, "lcgd")
    with pytest.raises(KeyError, match=r"the unit captured layers 0\.\.1"):
        icl["blocks.99.attn_out"]
    for load in (load_captures, load_train_queries):
        with pytest.raises(UserError, match="is not a folder: give a unit folder of a compare run"):
            load(tmp_path / "nope", "gd")
    none = run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"], captures="none", out=str(tmp_path / "b")),
                         show_progress=False)
    assert not (none / "captures").exists()


@pytest.mark.parametrize("family, bos", [("qwen2", None), ("gpt2", "none")])
def test_unit_without_bos_keeps_every_demo_token(family, bos, tmp_path):
    """Qwen2 has no BOS, and `bos: none` removes GPT-2's: the first token of each demo is a demo token, for the
    ICL prefix and for FT's recorded queries alike (Kendall checks they are the same tokens)."""
    model = save_tiny_model(family, tmp_path / family)
    result = run_compare(_cfg(model, tmp_path, bos=bos, methods=["gd", "lcgd"]), show_progress=False)
    assert result.record["bos_ids"] == []
    values = _values(result)
    assert ("gd", "kendall", None) in values and values[("gd", "kendall", None)] == values[("gd", "kendall", None)]


BATCH_SIZES_SCRIPT = """
import json, sys
from iclgd.experiments.compare import run_compare
from iclgd.experiments.config import CompareConfig
from iclgd.tasks import FIXTURES_DIR

def values(size):
    cfg = CompareConfig(model=sys.argv[1], task="sst2", data_dir=str(FIXTURES_DIR), shots=4, seed=1, eval_size=6,
                        lr=1e-2, methods=["gd", "lcgd"], kendall_examples=3, batch_size=size, out=sys.argv[2],
                        output_metrics=True, orderings=2)
    rows = run_compare(cfg, show_progress=False).metrics
    return {repr((r["method"], r["metric"], r["layer"])): r["value"] for r in rows}

by_size = {size: values(size) for size in (1, 4, 6)}
print(json.dumps({"metrics": sorted({key for key in by_size[6]}),
                  "differ": {size: [key for key, value in by_size[6].items() if by_size[size][key] != value
                                    and not (value != value and by_size[size][key] != by_size[size][key])]
                             for size in (1, 4)}}))
"""


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_value_is_independent_of_the_batch_size_in_mkl_strict_mode(family, tmp_path):
    """batch_size is not part of the unit id. With MKL_CBWR=AUTO,STRICT (README: Results) no value depends on it, to
    the bit: the random baselines draw per example from (seed, example index); MKL's strict mode keeps a row's bits
    whatever else is multiplied with it; sums over keys, padded scores and vocabularies run in index order (trailing
    zeros change nothing); the capture's scores are not a batched matrix product. sst2's rows differ in length, so
    batches pad. (In MKL's default mode the same values move in their last bits.)"""
    model = save_tiny_model(family, tmp_path / family)
    proc = subprocess.run([sys.executable, "-c", BATCH_SIZES_SCRIPT, str(model), str(tmp_path / "out")],
                          capture_output=True, text=True,
                          env={**os.environ, "MKL_CBWR": "AUTO,STRICT", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("kendall_random" in key for key in report["metrics"])
    assert any("order_sensitivity" in key for key in report["metrics"])
    assert report["differ"] == {"1": [], "4": []}


def test_a_rotary_first_layer_counts_every_icl_delta_as_zero(tmp_path):
    """The family table's layer blind to demos reaches SimAM_Δ: on a tiny LLaMA every (example, head) pair of layer
    0 counts as zero (in bfloat16 its rounding noise is far above the 1e-6 tolerance), none of layer 1, and α (two
    FT changes, nothing structural) is untouched."""
    model = save_tiny_model("llama", tmp_path / "llama")
    values = _values(run_compare(_cfg(model, tmp_path, kendall_examples=0, dtype="bfloat16"), show_progress=False))
    pairs = 6 * 4  # eval rows x heads
    assert values[("gd", "simam_delta_zero_count", 0)] == pairs and values[("gd", "simam_delta", 0)] == 0.0
    assert values[("gd", "simam_delta_zero_count", 1)] == 0
    assert values[("lcgd_vs_gd", "alpha_zero_count", 0)] < pairs


def test_a_unit_logged_to_a_file_says_each_stage_as_it_finishes(gpt2_dir, tmp_path, capsys):
    """The bars cannot redraw in a log file (nohup, a batch job): there a line per finished stage, or the log would
    stay empty until the unit ends."""
    run_compare(_cfg(gpt2_dir, tmp_path, lr=None, lr_search="halving", lr_search_rows=20), show_progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line]  # stdout is no terminal here
    assert [line.split(":")[0] for line in lines] == ["lr search", "ZS / ICL passes", "gd", "lcgd"]
    assert lines[1].startswith("ZS / ICL passes: 6 eval rows, ") and lines[2].startswith("gd: trained and measured, ")
    run_compare(_cfg(gpt2_dir, tmp_path), show_progress=False)
    assert not capsys.readouterr().out.strip()


def test_label_words_unknown_to_the_model_are_refused_before_any_pass(tmp_path):
    from iclgd.models.offline import SHIPPED_MODELS

    DEMO_MODEL = SHIPPED_MODELS["icc-gpt2"]

    with pytest.raises(UserError, match="unknown token"):
        run_compare(_cfg(DEMO_MODEL, tmp_path, task="synthetic-sentiment", data_dir=None), show_progress=False)


def test_keys_hidden_by_a_window_are_counted_per_pass_and_layer(tmp_path):
    """Mistral's tiny config has a window of 4 on every layer: the analysis position cannot see the first test
    tokens of a longer example. Those keys are excluded from SimAM and counted in `masked_key_count`."""
    model = save_tiny_model("mistral", tmp_path / "mistral")
    result = run_compare(_cfg(model, tmp_path, methods=["gd"], kendall_examples=0), show_progress=False)
    rows = [r for r in result.metrics if r["metric"] == "masked_key_count"]
    assert {r["method"] for r in rows} == {"zs", "icl", "gd"}
    by_layer = {(r["method"], r["layer"]): (r["value"], r["count"]) for r in rows}
    for method in ("zs", "icl", "gd"):
        hidden, tested = by_layer[(method, 0)]
        assert 0 < hidden < tested
        assert by_layer[(method, None)] == (hidden + by_layer[(method, 1)][0], tested + by_layer[(method, 1)][1])
    gpt2 = run_compare(_cfg(save_tiny_model("gpt2", tmp_path / "gpt2"), tmp_path, methods=["gd"], kendall_examples=0),
                       show_progress=False)
    assert all(r["value"] == 0 for r in gpt2.metrics if r["metric"] == "masked_key_count")


def test_cli_eval_size_above_the_split_is_said_and_recorded_and_stale_tmp_is_cleaned(tmp_path):
    """One stderr warning (not a silent clamp), the real eval size in the record and its config; the temporary
    folder of a compare killed while writing is removed by the next compare on that folder."""
    shipped = Path(__file__).resolve().parents[2] / "src" / "iclgd" / "assets" / "icc-gpt2"
    out = tmp_path / "out"
    stale = out / f".tmp-some-unit-{socket.gethostname()}-999999999"
    stale.mkdir(parents=True)
    (stale / "metrics.parquet").write_bytes(b"partial")
    proc = subprocess.run([sys.executable, "-m", "iclgd", "compare", "--model", str(shipped), "--task", "icc-heldout",
                           "--shots", "4", "--lr", "0.01", "--method", "gd", "--kendall-examples", "8",
                           "--batch-size", "100", "--eval-size", "100000", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: eval_size 100000") and "200 rows" in lines[0]
    (unit_dir,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    record = json.loads((unit_dir / "record.json").read_text())
    assert record["eval_size"] == 200 and record["config"]["eval_size"] == 200  # the unit that was computed
    assert not stale.exists()


def test_scores_carry_a_bootstrap_interval_over_examples(gpt2_dir, tmp_path):
    result = run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd"]), show_progress=False)
    rows = {(r["method"], r["metric"], r["layer"]): r for r in result.metrics}
    for key in [("icl", "accuracy", None), ("gd", "simaou_norm", None), ("gd", "simam_delta", 1),
                ("icl", "simaou_norm_random", None), ("gd", "kendall", None)]:
        row = rows[key]
        assert row["ci_low"] <= row["value"] + 1e-12 and row["value"] <= row["ci_high"] + 1e-12, key
    assert rows[("gd", "simam_delta_zero_count", None)]["ci_low"] is None
    again = {(r["method"], r["metric"], r["layer"]): r for r in run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd"]),
                                                                         show_progress=False).metrics}
    assert again[("gd", "simaou_norm", None)]["ci_low"] == rows[("gd", "simaou_norm", None)]["ci_low"]  # seeded


def test_scores_are_compared_with_their_within_unit_baselines_example_by_example(gpt2_dir, tmp_path):
    result = run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd", "lcgd"]), show_progress=False)
    rows = {(r["method"], r["metric"]): r for r in result.metrics if r["layer"] is None}
    values = _values(result)
    for method, metric, baseline in [("gd", "simaou_norm_vs_random", ("icl", "simaou_norm_random")),
                                     ("gd", "simaou_vs_random_direction", ("gd", "simaou_random_direction")),
                                     ("lcgd", "simam_vs_before", ("icl", "simam_before")),
                                     ("gd", "kendall_vs_random", ("gd", "kendall_random"))]:
        score = metric.split("_vs_")[0]
        row = rows[(method, metric)]
        # the mean of per-example differences of layer means = difference of the stored layer means
        assert row["value"] == pytest.approx(values[(method, score, None)] - values[(*baseline, None)], abs=1e-9)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert ("lcgd", "simaou_vs_random_direction") not in rows  # LCGD has no random-direction control


@pytest.mark.parametrize("task", ["wordnet-noun", "vader-movie", "fortune-topic"])
def test_a_unit_runs_on_a_slice_of_each_shipped_real_task(task, tmp_path):
    """The real tasks end to end on a tiny LLaMA whose vocabulary has their label words as single tokens."""
    from iclgd.tasks import load_task

    words = [w.strip() for w in load_task(task).label_words.values()]
    model = save_tiny_model("llama", tmp_path / "llama", vocab_words=words)
    result = run_compare(_cfg(model, tmp_path, task=task, data_dir=None, methods=["gd"], eval_size=8),
                         show_progress=False)
    values = _values(result)
    assert result.record["task"] == task and result.record["eval_size"] == 8
    assert 0 <= values[("icl", "accuracy", None)] <= 1 and ("gd", "simam_delta", None) in values


def test_halving_lr_search_picks_a_half_decade_point_and_records_its_scores(gpt2_dir, tmp_path):
    cfg = _cfg(gpt2_dir, tmp_path, lr=None, methods=["gd"], kendall_examples=0, lr_search_rows=30,
               lr_search="halving")
    record = run_compare(cfg, show_progress=False).record
    search = record["lr_search"]
    assert record["lr"] in HALF_DECADE_GRID and record["lr_source"].startswith("successive halving")
    assert [float(k) for k in search["scores"]] == list(HALF_DECADE_GRID)
    rows = search["rows"]
    assert set(rows.values()) <= {25, 30} and rows[repr(record["lr"])] == max(rows.values())


def test_a_partial_tie_in_the_lr_search_is_said_in_the_lr_source(capsys):
    from iclgd.experiments.compare import _flat
    from iclgd.finetune.lr_search import LrSearch

    tie = LrSearch(1e-3, {1e-3: 0.8, 3e-3: 0.8, 1e-2: 0.5, 3e-2: 0.8}, {1e-3: 32, 3e-3: 32, 1e-2: 32, 3e-2: 16})
    assert _flat(tie, "search") == "search; tied with lr 0.003 at its score, the smallest by the tie rule"
    assert _flat(LrSearch(1e-3, {1e-3: 0.8, 3e-3: 0.5}), "search") == "search"
    many = LrSearch(1e-4, {lr: 0.5 for lr in DAI_LR_GRID[:-3]} | {lr: 0.4 for lr in DAI_LR_GRID[-3:]})
    assert _flat(many, "search") == ("search; tied with 32 other lrs (0.0002 to 0.6) at its score, the smallest by the "
                                     "tie rule")
    assert "tie rule" in _flat(LrSearch(1e-3, {1e-3: 0.5, 3e-3: 0.5}), "search") and "every" in capsys.readouterr().err


def test_grid_lr_search_picks_what_scoring_every_point_on_every_row_picks(gpt2_dir, tmp_path, monkeypatch):
    """The raced grid search inside a unit: its choice is the exhaustive grid's, on the same trained tensors and the
    same chunks of held-out rows; its record keeps each scored point's accuracy over the rows it was scored on."""
    from iclgd import finetune as finetuning
    from iclgd.experiments import compare

    race = finetuning.race_grid
    exhaustive = {}

    def checked(train, correct, n_rows, **kwargs):
        chunks = [range(s, min(s + kwargs["chunk_rows"], n_rows)) for s in range(0, n_rows, kwargs["chunk_rows"])]
        right = {lr: sum(correct(tensors, rows) for rows in chunks) for lr in DAI_LR_GRID for tensors in [train(lr)]}
        exhaustive.update(right)
        return race(train, correct, n_rows, **kwargs)

    monkeypatch.setattr(compare.finetuning, "race_grid", checked)
    cfg = _cfg(gpt2_dir, tmp_path, lr=None, methods=["gd"], kendall_examples=0, lr_search_rows=40)
    record = run_compare(cfg, show_progress=False).record
    search = record["lr_search"]
    assert len(set(exhaustive.values())) > 1  # the lrs score apart: the choice is a measurement
    assert record["lr"] == finetuning.search_grid(lambda lr: exhaustive[lr]).lr
    assert record["lr_source"].startswith("search on Dai's grid: FT accuracy on 40 held-out training rows (best first")
    rows = {float(k): v for k, v in search["rows"].items()}
    assert rows[record["lr"]] == 40 and set(rows.values()) <= {25, 40} and set(rows) <= set(DAI_LR_GRID)
    for lr, score in search["scores"].items():  # a point scored on all rows scored what the exhaustive grid did
        if rows[float(lr)] == 40:
            assert score == exhaustive[float(lr)] / 40


def test_lr_search_enters_the_unit_id_only_where_it_changes_the_unit(tmp_path):
    """The grid search (the default, and what every older unit ran) and any unit with an lr keep their ids."""
    searched = _cfg("m", tmp_path, lr=None)
    assert "lr_search" not in searched.unit_fields()
    assert searched.model_copy(update={"lr_search": "halving"}).unit_id() != searched.unit_id()
    given = _cfg("m", tmp_path)
    assert given.model_copy(update={"lr_search": "halving"}).unit_id() == given.unit_id()
    # the search's rows enter the id only where a search runs; a unit with an lr keeps the id it had at the default
    assert given.model_copy(update={"lr_search_rows": 25}).unit_id() == given.unit_id()
    assert searched.model_copy(update={"lr_search_rows": 25}).unit_id() != searched.unit_id()


def test_more_lr_search_rows_than_the_pool_holds_is_a_warning(gpt2_dir, tmp_path, capsys, monkeypatch):
    from iclgd import errors

    monkeypatch.setattr(errors, "_SAID", set())
    cfg = _cfg(gpt2_dir, tmp_path, lr=None, methods=["gd"], kendall_examples=0, lr_search_rows=1000,
               lr_search="halving")
    record = run_compare(cfg, show_progress=False).record
    err = capsys.readouterr().err
    left = max(record["lr_search"]["rows"].values())
    assert f"lr_search_rows 1000 is more than the {left} pool rows left beside the demos" in err
    assert f"of {left} held-out training rows" in record["lr_source"]
    run_compare(cfg.model_copy(update={"seed": 2}), show_progress=False)  # a sweep's next unit: said once
    assert "pool rows left beside the demos" not in capsys.readouterr().err


def test_lcgd_paper_runs_as_a_method_with_one_gradient_norm_row_per_token_step(gpt2_dir, tmp_path):
    from iclgd.experiments.compare import prepare_unit, select_rows
    from iclgd.models.loading import load_model

    cfg = _cfg(gpt2_dir, tmp_path, methods=["gd", "lcgd-paper"], kendall_examples=0)
    result = run_compare(cfg, show_progress=False)
    values = _values(result)
    assert ("lcgd-paper", "simaou", None) in values and ("lcgd-paper", "accuracy", None) in values
    steps = {method: {r["metric"] for r in result.metrics if r["method"] == method and r["metric"].startswith("grad_")}
             for method in ("gd", "lcgd-paper")}
    sequences = prepare_unit(cfg, load_model(cfg.model), select_rows(cfg)).prompts.training_sequences()
    assert len(steps["gd"]) == len(sequences) == result.record["true_k"]
    assert len(steps["lcgd-paper"]) == sum(len(s) - 1 for s in sequences)


def test_example_scores_back_every_score_and_pair_a_unit_with_its_untrained_variant(gpt2_dir, tmp_path):
    """The per-example scores average to the stored layer-null values; recomputed from them, a unit's within-unit
    paired interval equals the stored one; and the trained unit is paired with its untrained variant example by
    example (the difference of their layer-null scores, n = the eval examples)."""
    from iclgd.report.paired import PairedScores, paired_interval
    from iclgd.runner import open_results

    run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"]), show_progress=False)
    run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"], lr=1e-2, untrained="all"), show_progress=False)
    con = open_results(tmp_path / "out")
    stored = {(u, m, metric): (v, low, high) for u, m, metric, v, low, high in con.execute(
        "SELECT unit, method, metric, value, ci_low, ci_high FROM metrics WHERE layer IS NULL").fetchall()}
    means = con.execute("SELECT unit, method, metric, avg(value), count(*) FROM example_scores "
                        "GROUP BY ALL").fetchall()
    assert {(m, metric) for _, m, metric, _, _ in means} >= {("gd", "simaou_norm"), ("icl", "simaou_norm_random"),
                                                              ("gd", "simam_delta"), ("gd", "kendall")}
    for unit, method, metric, mean, n in means:
        assert mean == pytest.approx(stored[(unit, method, metric)][0], abs=1e-12)
        assert n == (3 if metric.startswith("kendall") else 6)

    paired = PairedScores(con)
    trained = next(u for u, keys in paired.keys.items() if keys["variant"] == "trained")
    difference = paired._difference((trained, "gd", "simaou_norm"), (trained, "icl", "simaou_norm_random"))
    mean, ci = paired_interval([difference], 1, "gd/simaou_norm_vs_random")
    assert (mean, *ci) == pytest.approx(stored[(trained, "gd", "simaou_norm_vs_random")], abs=1e-12)

    tests = {(t.method, t.metric): t for t in paired.variant_tests()}
    assert set(tests) == {("gd", m) for m in ("simaou_norm", "simaou", "simam", "simam_delta", "kendall")}
    test = tests[("gd", "simaou_norm")]
    untrained = test.baseline_unit
    assert test.unit == trained and test.variant == "untrained:all" and test.n == 6
    assert test.score == pytest.approx(stored[(trained, "gd", "simaou_norm")][0], abs=1e-12)
    assert test.baseline == pytest.approx(stored[(untrained, "gd", "simaou_norm")][0], abs=1e-12)
    assert test.ci[0] <= test.difference <= test.ci[1]
    lows = [stored[(trained, "gd", f"simaou_norm_vs_{name}")][1] for name in ("random", "random_direction")]
    assert paired.below_baseline([trained], "gd", "simaou_norm") == (not test.beats or min(lows) <= 0)


def test_eval_size_past_the_split_is_the_whole_split_one_unit(gpt2_dir, tmp_path, capsys):
    """An eval_size above the eval split's 24 rows evaluates all 24: it is the same unit as eval_size 24 (one id,
    computed once), and the stored config says 24."""
    from iclgd import errors

    errors._SAID.clear()  # warned once per process
    whole = run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"], kendall_examples=0, eval_size=1000),
                          show_progress=False)
    assert capsys.readouterr().err.count("eval_size 1000 is more than the 24 rows of sst2's eval split") == 1
    record = json.loads((whole / "record.json").read_text())
    assert record["config"]["eval_size"] == 24 and record["eval_size"] == 24
    again = run_and_store(_cfg(gpt2_dir, tmp_path, methods=["gd"], kendall_examples=0, eval_size=24),
                          show_progress=False)
    assert again == whole and "already done" in capsys.readouterr().err
    smaller = _cfg(gpt2_dir, tmp_path, methods=["gd"], kendall_examples=0, eval_size=23)
    assert run_and_store(smaller, show_progress=False) != whole  # within the split, eval_size is the unit's own


def test_low_precision_update_loss_is_recorded_and_warned(gpt2_dir, tmp_path, capsys):
    """In bfloat16 a small-lr update mostly rounds away when the model holds it: the unit records by how much and
    says so on stderr; in float32 nothing is lost and nothing is said."""
    low = run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd"], kendall_examples=0, lr=1e-4, dtype="bfloat16"),
                      show_progress=False)
    assert low.record["dtype"] == "bfloat16" and low.record["update_rounding_error"]["gd"] > 0.5
    err = capsys.readouterr().err
    assert err.count("warning: bfloat16 holds gd's trained weights with a relative error of") == 1
    full = run_compare(_cfg(gpt2_dir, tmp_path, methods=["gd"], kendall_examples=0, lr=1e-4), show_progress=False)
    assert full.record["update_rounding_error"] == {"gd": 0.0} and "rounding" not in capsys.readouterr().err


def test_a_finished_unit_of_a_changed_task_file_is_not_reused(gpt2_dir, tmp_path, capsys):
    """The unit id names a task file by its path; a rerun after its template, label words or data changed is
    refused (one line, naming what differs) instead of answering with the old results."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [("a great film", "positive"), ("a dull plot", "negative"), ("I loved it", "positive"),
            ("a waste of time", "negative")] * 4
    lines = "".join(json.dumps({"sentence": text, "label": label}) + "\n" for text, label in rows)
    (data / "train.jsonl").write_text(lines)
    (data / "test.jsonl").write_text(lines)
    task_file = tmp_path / "reviews.yaml"
    task_text = (f"task: reviews\ndataset_path: {data}\ntraining_split: train\ntest_split: test\n"
                 "doc_to_text: 'Sentence: {sentence} Label:'\nlabel_field: label\n"
                 "doc_to_choice: {negative: ' Negative', positive: ' Positive'}\n")
    task_file.write_text(task_text)
    cfg = _cfg(gpt2_dir, tmp_path, task=str(task_file), data_dir=None, methods=["gd"], kendall_examples=0)
    other = cfg.model_copy(update={"seed": 2})
    run_and_store(other, show_progress=False)
    unit_dir = run_and_store(cfg, show_progress=False)
    assert run_and_store(cfg, show_progress=False) == unit_dir and "already done" in capsys.readouterr().err
    task_file.write_text(task_text.replace("Sentence: {sentence} Label:", "Text: {sentence} Answer:"))
    with pytest.raises(UserError, match=r"task .*reviews.yaml changed since unit .* \(what differs: template\)"):
        run_and_store(cfg, show_progress=False)
    task_file.write_text(task_text)
    (data / "test.jsonl").write_text(lines.replace('"positive"', '"other"').replace('"negative"', '"positive"')
                                     .replace('"other"', '"negative"'))
    with pytest.raises(UserError, match=r"\(what differs: dataset_revision\)"):
        run_and_store(cfg, show_progress=False)
    with pytest.raises(UserError, match=rf"\(what differs: dataset_revision\).*; 1 more finished unit\(s\) changed "
                                        rf"too: {other.unit_id()}"):  # a sweep names them all before any unit
        check_units([cfg, other])


def test_a_rerun_asking_for_more_captures_says_the_finished_unit_keeps_its_own(tmp_path, capsys):
    """Captures are no part of the unit id: a rerun with captures full finds the unit done; it says that the unit
    keeps what it stored and how to get more (a compare, and a sweep naming all such units in one line)."""
    from iclgd.experiments.captures import load_captures

    model = save_tiny_model("gpt2", tmp_path / "model")
    cfg = _cfg(model, tmp_path, methods=["gd"], kendall_examples=0, captures="none")
    unit_dir = run_and_store(cfg, show_progress=False)
    capsys.readouterr()
    assert run_and_store(cfg.model_copy(update={"captures": "compact"}), show_progress=False) == unit_dir
    err = capsys.readouterr().err
    assert f"unit {unit_dir.name} is done with captures none" in err and f"delete {unit_dir} and rerun" in err
    run_and_store(cfg, show_progress=False)  # as many as it stored: nothing to say
    assert "is done with captures" not in capsys.readouterr().err
    with pytest.raises(UserError, match="delete the folder and rerun the unit to make them"):
        load_captures(unit_dir, "zs")
    other = cfg.model_copy(update={"seed": 2})
    run_and_store(other, show_progress=False)
    check_units([c.model_copy(update={"captures": "full"}) for c in (cfg, other)])
    err = capsys.readouterr().err
    assert err.count("is done with captures none") == 1 and "(and 1 more finished unit(s) of this run)" in err


def test_a_finished_unit_of_a_changed_model_folder_is_not_reused(tmp_path, capsys):
    """The unit id names a local model by its path; the record keeps its files' sizes and times, and a rerun after
    the weights were replaced is refused (one line, naming the file) instead of answering with the old results."""
    import safetensors.torch as st

    model = save_tiny_model("gpt2", tmp_path / "model")
    cfg = _cfg(model, tmp_path, methods=["gd"], kendall_examples=0)
    unit_dir = run_and_store(cfg, show_progress=False)
    record = json.loads((unit_dir / "record.json").read_text())
    weights_file = model / "model.safetensors"
    assert record["model"]["files"]["model.safetensors"][0] == weights_file.stat().st_size
    assert record["model"]["sha256"]["model.safetensors"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert run_and_store(cfg, show_progress=False) == unit_dir and "already done" in capsys.readouterr().err
    weights = st.load_file(weights_file)
    # the same bytes written again (a fresh copy): a new time, the same content, so the unit is reused
    weights_file.write_bytes(weights_file.read_bytes())
    os.utime(weights_file, ns=(1, 1))
    assert run_and_store(cfg, show_progress=False) == unit_dir and "already done" in capsys.readouterr().err
    st.save_file({name: t + 0.01 for name, t in weights.items()}, weights_file, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"changed since unit .* \(model.safetensors differ in content\)"):
        run_and_store(cfg, show_progress=False)
    del record["model"]["sha256"]  # a record from before contents were hashed: sizes and times only
    (unit_dir / "record.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"\(model.safetensors differ in size or time\)"):
        run_and_store(cfg, show_progress=False)


def test_a_tokenizer_larger_than_the_model_vocabulary_is_a_user_error(tmp_path):
    """A tokenizer saved beside another model: its ids past the embedding rows fail before any pass, in one line."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from iclgd.models.tiny import tiny_model

    _, tokenizer = tiny_model("gpt2", seed=0)
    folder = tmp_path / "small-vocab"
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=256)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(UserError, match=r"outside .*small-vocab's vocabulary of 50 embeddings \(its tokenizer has"):
        run_compare(_cfg(folder, tmp_path, methods=["gd"], kendall_examples=0), show_progress=False)


def test_a_noise_floor_whose_orderings_end_alike_is_warned(tmp_path, capsys, monkeypatch):
    """Two orderings that keep the last demo in place measure recency, not order: the floor compares near-identical
    readings. The ordering added for the floor alone ends with another demo; two asked for (orders 0 and 1 of seed
    1 end alike) are warned of, once per process (a sweep's units would repeat it)."""
    from iclgd import errors
    from iclgd.experiments.compare import demo_orders

    monkeypatch.setattr(errors, "_SAID", set())
    cfg = _cfg("m", tmp_path, output_metrics=True, seed=1)
    added = demo_orders(cfg, 4)  # orderings 1: the floor's second ordering is added
    assert len(added) == 2 and added[0][-1] != added[1][-1] and "same demo" not in capsys.readouterr().err
    asked = cfg.model_copy(update={"orderings": 2})
    orders = demo_orders(asked, 4)
    assert len(orders) == 2 and orders[0][-1] == orders[1][-1]
    err = capsys.readouterr().err
    assert "all end with the same demo" in err and "KL and JS near 0, TO@10 and OCS@10 near 1" in err
    demo_orders(asked, 4)
    assert "same demo" not in capsys.readouterr().err  # once
    monkeypatch.setattr(errors, "_SAID", set())
    assert len({int(o[-1]) for o in demo_orders(cfg.model_copy(update={"orderings": 3}), 4)}) > 1
    assert "same demo" not in capsys.readouterr().err


def test_scores_that_overflow_float16_name_the_dtype_not_the_learning_rate(tmp_path):
    """Weights that fit float16 but whose activations overflow it give NaN next-token scores: the unit fails
    before any FT, saying to load the model in bfloat16 or float32 (as Gemma-3 in float16 needs)."""
    import safetensors.torch as st

    model = save_tiny_model("gpt2", tmp_path / "loud")
    weights = st.load_file(model / "model.safetensors")
    weights = {name: (t.sign() * 3e4 if name.endswith("mlp.c_fc.weight") else t) for name, t in weights.items()}
    st.save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"NaN next-token scores in its ZS pass at torch.float16: its activations "
                                        r"overflow float16: load it in bfloat16 or float32 \(--dtype\)"):
        run_compare(_cfg(model, tmp_path, dtype="float16", methods=["gd"]), show_progress=False)


def test_a_unit_without_kendall_examples_says_it_has_no_kendall(tmp_path, capsys, monkeypatch):
    from iclgd import errors

    monkeypatch.setattr(errors, "_SAID", set())
    model = save_tiny_model("gpt2", tmp_path / "model")
    result = run_compare(_cfg(model, tmp_path, methods=["gd"], kendall_examples=0), show_progress=False)
    assert "no Kendall τ in this unit: kendall_examples is 0" in capsys.readouterr().err
    run_compare(_cfg(model, tmp_path, methods=["gd"], kendall_examples=0, seed=2), show_progress=False)
    assert "no Kendall" not in capsys.readouterr().err  # once per process: a sweep's units would repeat it
    assert not [row for row in result.metrics if row["metric"].startswith("kendall")]
    for seed in (3, 4):  # two epochs: the other reason, also said once
        run_compare(_cfg(model, tmp_path, methods=["gd"], epochs=2, seed=seed), show_progress=False)
        assert ("measured for Dai's gd over one epoch" in capsys.readouterr().err) == (seed == 3)


def test_the_floor_ordering_rule_is_part_of_the_id_of_the_units_it_applies_to(tmp_path):
    """Units whose output-metrics floor takes the added ordering carry its rule in their id (those stored before it,
    whose floor was order + 1, are computed anew, never pooled with them); no other unit's id changes, nor that of a
    unit of one demo, which has no second ordering."""
    from iclgd.experiments.config import FLOOR_ORDERING_RULE

    cfg = _cfg("m", tmp_path, output_metrics=True)
    assert cfg.unit_fields()["floor_ordering"] == FLOOR_ORDERING_RULE
    for other in (cfg.model_copy(update={"orderings": 3}), cfg.model_copy(update={"output_metrics": False}),
                  cfg.model_copy(update={"shots": 1})):
        assert "floor_ordering" not in other.unit_fields()


def test_what_waits_in_the_scratch_folder_comes_back_bit_for_bit(tmp_path):
    """A unit keeps its references, captures and order-sensitivity accumulators in its scratch folder, batch by batch:
    each comes back exactly, and Sen accumulated per batch there equals one accumulator over all rows in memory."""
    from iclgd import metrics
    from iclgd.experiments.compare import OrderSpreads, Scratch
    from iclgd.models.capture import Capture

    g = torch.Generator().manual_seed(0)
    scratch = Scratch(tmp_path)
    capture = Capture(attention_output=torch.randn(3, 2, 4, generator=g), presoftmax_logits=torch.randn(3, 2, 2, 5),
                      test_length=torch.tensor([5, 4, 2]), masked_keys=torch.zeros(3, 2, dtype=torch.long),
                      demo_logits=None, analysis_query=torch.empty(0), all_queries=None)
    scratch.put("icl-0", capture)
    back = scratch.capture("icl-0")
    assert back.demo_logits is None and all(torch.equal(getattr(back, name), getattr(capture, name))
                                            for name in ("attention_output", "presoftmax_logits", "test_length"))
    orderings = [torch.softmax(torch.randn(10, 7, generator=g, dtype=torch.float64), -1) for _ in range(3)]
    whole, spilled = metrics.RunningOrderSpread(10, 7), OrderSpreads(scratch, "gd", 7)
    for p in orderings:
        whole.add(torch.arange(10), p)
        for batch, rows in enumerate(([0, 1, 2, 3], [4, 5, 6, 7], [8, 9])):
            spilled.add(5, batch, p[rows])
    assert torch.equal(spilled.per_example(5), whole.per_example())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icl-0.pt"]  # an epoch's accumulators go once read


def test_the_accumulator_keeps_values_not_the_passes_they_are_views_of():
    """A metric's per-example values can be a view of a pass's [B, V] tensor; the unit keeps them for its whole run,
    so they must not keep that tensor alive (19.6 MiB per recorded epoch on SmolLM2 before)."""
    from iclgd import metrics
    from iclgd.experiments.accumulate import Accumulator

    big = torch.rand(25, 1000, dtype=torch.float64)
    acc = Accumulator()
    acc.add_scalar("gd", "kl", big[:, 0], epoch=1)
    acc.add("gd", "simaou", metrics.layer_average(big[:, :3]))
    for chunks in acc.values.values():
        (kept,) = chunks
        assert kept.untyped_storage().nbytes() == kept.numel() * 8
    assert torch.equal(acc.values[("gd", "kl", 1)][0], big[:, 0])
