"""`iclgd momentum` at toy sizes: the runs, the measures, the paired differences, the table and figure; η = 0 trains
exactly as vanilla; bad settings fail before any training."""

import math

import pyarrow.parquet as pq
import pytest

from iclgd.errors import UserError
from iclgd.experiments.momentum import Variant, compare_momentum
from iclgd.report.momentum import momentum_table, plot_momentum
from iclgd.synthetic.pretrain.train import onset_step

TOY = dict(batch_size=4, n_embd=16, n_head=2, n_layer=2, n_positions=32, checkpoint_every=10, log_every=5,
           warmup_steps=2)
SIZES = dict(seeds=(0, 1), steps=12, lengths=(8, 16), ks=(0, 2), demo_seeds=2, eval_size=6, n_sequences=16,
             overrides=TOY, progress=False)


def test_eta_zero_momentum_trains_and_scores_exactly_as_vanilla(tmp_path):
    variants = (Variant("vanilla"), Variant("momentum", 0.0), Variant("momentum", 0.00))  # a repeat counts once
    rows = compare_momentum(tmp_path, variants=variants, **SIZES)
    measured = {(r["variant"], r["seed"], r["demo_seed"], r["measure"], r["at"]): r["value"] for r in rows}
    vanilla = {key[1:]: value for key, value in measured.items() if key[0] == "vanilla"}
    momentum = {key[1:]: value for key, value in measured.items() if key[0] == "momentum-eta0"}
    assert vanilla.keys() == momentum.keys() and len(vanilla) == 2 * (2 + 2 * 2 + 1)
    assert all(vanilla[key] == momentum[key] or (math.isnan(vanilla[key]) and math.isnan(momentum[key]))
               for key in vanilla)
    differences = [r for r in rows if r["seed"] is None]
    assert {(r["measure"], r["at"]) for r in differences} == {("log_perplexity_difference", 8),
                                                              ("log_perplexity_difference", 16),
                                                              ("icl_accuracy_difference", 0),
                                                              ("icl_accuracy_difference", 2)}
    assert len(differences) == 4 and all(r["value"] == r["ci_low"] == r["ci_high"] == 0.0 for r in differences)
    assert {r["count"] for r in differences if r["measure"] == "log_perplexity_difference"} == {2 * 16}
    stored = pq.read_table(tmp_path / "momentum.parquet")
    assert stored.num_rows == len(rows) and b"iclgd" in stored.schema.metadata
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["momentum-eta0-s0", "momentum-eta0-s1",
                                                                     "vanilla-s0", "vanilla-s1"]


def test_momentum_table_and_figure(tmp_path):
    rows = compare_momentum(tmp_path, variants=(Variant("vanilla"), Variant("momentum", 0.8, learned=True)), **SIZES)
    by_key = {(r["variant"], r["seed"], r["measure"], r["at"]): r for r in rows if r["demo_seed"] is None}
    ppl = by_key[("momentum-learned0.8", 0, "perplexity", 16)]
    assert ppl["ci_low"] <= ppl["value"] <= ppl["ci_high"] and ppl["value"] > 1
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(momentum_table(rows))
    text = console.export_text()
    assert "ppl @16" in text and "acc k=2" in text and "momentum-learned0.8 − vanilla" in text and "15.14" in text
    assert "mean ± std over 2 pretraining seeds" in momentum_table(rows).title
    one_seed = [r for r in rows if r["seed"] in (0, None)]
    assert momentum_table(one_seed).title.startswith("Momentum vs vanilla attention: one pretraining seed (no std);")
    paths = plot_momentum(rows, tmp_path / "momentum")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert onset_step(tmp_path / "runs" / "vanilla-s0", threshold=0.0) == 5  # the first logged step


def test_the_task_defaults_to_the_corpus_heldout_task(tmp_path):
    import json

    rows = compare_momentum(tmp_path, corpus="icc-exemplars", variants=(Variant("vanilla"), Variant("momentum", 0.5)),
                            **{**SIZES, "seeds": (0,), "steps": 2, "ks": (2,), "demo_seeds": 1})
    settings = json.loads(pq.read_table(tmp_path / "momentum.parquet").schema.metadata[b"iclgd"])["settings"]
    assert settings["task"] == "icc-exemplars-heldout" and settings["corpus"] == "icc-exemplars"
    assert {r["count"] for r in rows if r["measure"] == "icl_accuracy"} == {6}


def test_bad_settings_fail_before_training(tmp_path):
    with pytest.raises(UserError, match="context lengths"):
        compare_momentum(tmp_path / "a", **{**SIZES, "lengths": (8, 64)})
    with pytest.raises(UserError, match="unknown task"):
        compare_momentum(tmp_path / "b", task="no-such-task", **SIZES)
    with pytest.raises(UserError, match="task 'icc-heldout' does not fit corpus 'ginc': label word ' L1' maps to "
                                        "the unknown token"):
        compare_momentum(tmp_path / "c", corpus="ginc", task="icc-heldout", **SIZES)
    assert not any((tmp_path / name / "runs").exists() for name in "abc")


def test_a_run_folder_of_another_config_is_refused_before_any_training(tmp_path):
    """Seed 1's run exists with 2 steps; asked for 12, momentum names what differs before seed 0 trains."""
    from iclgd.synthetic.pretrain.config import load_config
    from iclgd.synthetic.pretrain.train import pretrain

    pretrain(load_config(None, corpus="icc", seed=1, steps=2, **TOY), tmp_path / "runs" / "vanilla-s1", progress=False)
    with pytest.raises(UserError, match=r"another config \(steps 2 there, 12 now\)"):
        compare_momentum(tmp_path, **{**SIZES, "variants": (Variant("vanilla"),)})
    assert not (tmp_path / "runs" / "vanilla-s0").exists()
