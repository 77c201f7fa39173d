"""Shen et al. in a compare unit: FT methods by name, curves over epochs, output-distribution metrics against ICL
with their ICL-vs-ICL noise floor, and order sensitivity over orderings of the same demos."""

import pytest
import torch

from iclgd import finetune as finetuning
from iclgd import metrics
from iclgd.errors import UserError
from iclgd.experiments.compare import prepare_unit, run_compare, select_rows
from iclgd.experiments.config import CompareConfig
from iclgd.experiments.run import run_and_store
from iclgd.models.capture import encode_prefix
from iclgd.models.loading import load_model
from iclgd.models.tiny import save_tiny_model
from iclgd.prompts.scoring import score_batch
from iclgd.runner.results import open_results
from iclgd.tasks import FIXTURES_DIR

METHODS = ["gd", "whole-gd-label", "wv:1-sgd2-label@0.05"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny") / "llama")


def _cfg(model, tmp_path, **kw):
    fields = dict(model=str(model), task="sst2", data_dir=str(FIXTURES_DIR), shots=4, seed=1, eval_size=6, lr=0.5,
                  methods=METHODS, epochs=3, record_epochs=[1, 3], output_metrics=True, orderings=3,
                  kendall_examples=3, batch_size=4, out=str(tmp_path / "out"))
    fields.update(kw)
    return CompareConfig(**fields)


@pytest.fixture(scope="module")
def unit(llama_dir, tmp_path_factory):
    cfg = _cfg(llama_dir, tmp_path_factory.mktemp("shen"))
    return cfg, run_compare(cfg, show_progress=False)


def _values(result):
    return {(r["method"], r["metric"], r["layer"], r["epoch"]): r["value"] for r in result.metrics}


def test_every_method_is_measured_at_every_recorded_epoch(unit):
    cfg, result = unit
    values = _values(result)
    for method in METHODS:
        for epoch in (1, 3):
            for metric in ("accuracy", "fullvocab_accuracy", "simaou", "simam", "to@10", "ocs@10", "kl", "js",
                           "order_sensitivity", "to@10_vs_order_floor"):
                assert (method, metric, None, epoch) in values, (method, metric, epoch)
        assert (method, "accuracy", None, 2) not in values  # epoch 2 was not asked for
    for metric in ("accuracy", "order_sensitivity"):
        assert ("icl", metric, None, None) in values  # ICL: no epoch
    for metric in ("to@10", "ocs@10", "kl", "js"):
        assert ("icl_vs_icl", metric, None, None) in values  # the noise floor: ICL under two orderings
        assert ("icl", metric, None, None) not in values
    assert ("whole-gd-label", "masked_key_count", None, 3) in values  # counted in the last epoch's pass
    losses = result.record["train_loss_per_epoch"]
    assert set(losses) == set(METHODS) and all(len(per_epoch) == 3 for per_epoch in losses.values())

    last_step = result.record["true_k"] - 1  # gd: one step per demo; the first epoch's steps are kept
    assert ("gd", f"grad_norm_step{last_step}", 0, None) in values
    assert ("gd", f"grad_norm_step{last_step + 1}", 0, None) not in values
    assert ("gd", "kendall", None, 1) not in values  # Kendall is Dai's one-epoch measurement
    assert result.record["epochs_recorded"] == [1, 3] and len(result.record["orderings"]) == 3
    assert result.record["methods"]["wv:1-sgd2-label@0.05"]["lr"] == 0.05
    assert result.record["peak_memory_mb"] > 0


def test_full_batch_gd_is_order_invariant_and_minibatch_sgd_and_icl_are_not(unit):
    _, result = unit
    values = _values(result)
    for epoch in (1, 3):
        assert values[("whole-gd-label", "order_sensitivity", None, epoch)] == 0.0  # exactly: a batch is a set
        assert values[("wv:1-sgd2-label@0.05", "order_sensitivity", None, epoch)] > 1e-4
        assert values[("gd", "order_sensitivity", None, epoch)] > 1e-4
    assert values[("icl", "order_sensitivity", None, None)] > 1e-4


def test_output_metrics_equal_a_direct_computation(unit, llama_dir):
    """TO@10, OCS@10, KL(ICL || FT), JS at epoch 3 of whole-model GD, recomputed from plain passes."""
    cfg, result = unit
    values = _values(result)
    lm = load_model(cfg.model)
    prompts = prepare_unit(cfg, lm, select_rows(cfg)).prompts
    indices = list(range(len(prompts.queries)))
    prefix = encode_prefix(lm, torch.tensor(prompts.prefix_ids))
    lp_icl = score_batch(lm, prompts, indices, prefix=prefix, capture=False).next_token_logprobs.double()
    lp_ft = {}

    def on_epoch(epoch):
        lp_ft[epoch] = score_batch(lm, prompts, indices, prefix=None, capture=False).next_token_logprobs.double()

    finetuning.finetune(lm, prompts.training_sequences(), cfg.lr, method="whole-gd-label", epochs=3,
                        label_lengths=prompts.training_label_lengths(), on_epoch=on_epoch)
    for name, metric in metrics.OUTPUT_METRICS.items():  # the unit's metrics take log-probabilities
        expected = float(metric(lp_icl, lp_ft[3]).mean())
        assert values[("whole-gd-label", name, None, 3)] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    p_icl, p_ft = lp_icl.exp(), {3: lp_ft[3].exp()}  # and on probabilities, the metrics' plain forms agree
    assert values[("whole-gd-label", "kl", None, 3)] == pytest.approx(
        float(metrics.kl_divergence(p_icl, p_ft[3]).mean()), rel=1e-6)
    assert values[("whole-gd-label", "js", None, 3)] == pytest.approx(
        float(metrics.js_divergence(p_icl, p_ft[3]).mean()), rel=1e-6)
    # sanity: by hand on the first example, TO@10 is the shared fraction of the two top-10 sets
    top_icl, top_ft = set(p_icl[0].topk(10).indices.tolist()), set(p_ft[3][0].topk(10).indices.tolist())
    assert float(metrics.token_overlap(p_icl[:1], p_ft[3][:1])) == len(top_icl & top_ft) / 10


def test_summary_table_shows_the_output_metrics_and_sen(llama_dir, tmp_path):
    from rich.console import Console

    from iclgd.report.tables import summary_table
    cfg = _cfg(llama_dir, tmp_path, methods=["whole-gd-label"], epochs=2, record_epochs=None, orderings=2,
               captures="none")
    run_and_store(cfg, show_progress=False)
    con = open_results(tmp_path / "out")
    console = Console(record=True, width=400)
    console.print(summary_table(con, ft_method="whole-gd-label"))
    text = console.export_text()
    for header in ("TO@10", "TO@10 ICL-ICL", "OCS@10 ICL-ICL", "Sen ICL", "Sen FT"):
        assert header in text
    sen = con.execute("SELECT value FROM metrics WHERE method = 'whole-gd-label' AND metric = 'order_sensitivity'"
                      ).fetchone()[0]
    assert sen == 0.0 and "0.0000" in text  # full-batch GD, read at its last epoch


def test_store_views_final_epoch_and_curves(llama_dir, tmp_path):
    cfg = _cfg(llama_dir, tmp_path, methods=["whole-adam-label@1e-3"], orderings=1, output_metrics=False,
               captures="none")
    run_and_store(cfg, show_progress=False)
    con = open_results(tmp_path / "out")
    final = con.execute("SELECT DISTINCT epoch FROM metrics WHERE method = 'whole-adam-label@1e-3' "
                        "AND metric = 'accuracy'").fetchall()
    curve = con.execute("SELECT DISTINCT epoch FROM metrics_by_epoch WHERE method = 'whole-adam-label@1e-3' "
                        "AND epoch IS NOT NULL ORDER BY epoch").fetchall()
    assert final == [(3,)] and curve == [(1,), (3,)]


def test_model_is_left_unchanged_by_a_whole_model_unit(llama_dir, tmp_path):
    """A whole-model method leaks no weight into the passes of the next method: gd after it equals gd alone."""
    after_whole = _values(run_compare(_cfg(llama_dir, tmp_path, methods=["whole-sgd-label@0.5", "gd"], epochs=1,
                                           record_epochs=None, orderings=1, output_metrics=False), show_progress=False))
    alone = _values(run_compare(_cfg(llama_dir, tmp_path, methods=["gd"], epochs=1, record_epochs=None, orderings=1,
                                     output_metrics=False), show_progress=False))
    for key, value in alone.items():
        if key[0] == "gd":
            assert after_whole[key] == value or (value != value and after_whole[key] != after_whole[key]), key


@pytest.mark.parametrize("fields, message", [
    (dict(record_epochs=[1, 5]), "record_epochs \\[5\\] lie outside the 3 epoch"),
    (dict(methods=["gd", "whole-lbfgs"]), "unknown optimizer 'lbfgs'"),
    (dict(methods=["whole-gd-label"], lr=None), "have no learning rate"),
    (dict(methods=["gd"], lr=None), "have no learning rate"),  # gd for 3 epochs: no published or searched lr
    (dict(methods=["gd", "kv-sgd-demo"]), "'gd' and 'kv-sgd-demo' train alike"),
    (dict(ft_shots=7, orderings=1, balanced=True), "ft_shots and balanced do not combine"),
])
def test_bad_settings(llama_dir, tmp_path, fields, message):
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match=message):
        _cfg(llama_dir, tmp_path, **fields)


def test_layer_out_of_range_fails_before_any_pass(llama_dir, tmp_path):
    cfg = _cfg(llama_dir, tmp_path, methods=["wv:7-gd"])
    with pytest.raises(UserError, match="trains layer 7, but the model has 2 layers"):
        run_and_store(cfg, show_progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_gd_with_more_data_trains_on_ft_shots_demos(llama_dir, tmp_path):
    """Shen's Table 1: FT on N demos (the first N of the same sample) beside k-shot ICL on the first k."""
    cfg = _cfg(llama_dir, tmp_path, shots=2, ft_shots=7, methods=["gd", "whole-gd-label"], epochs=2,
               record_epochs=None, orderings=1, output_metrics=False)
    result = run_compare(cfg, show_progress=False)
    record = result.record
    assert len(record["ft_demo_rows"]) == 7 and record["true_k"] <= 2
    assert record["ft_demo_rows"][:record["true_k"]] == sorted(record["demo_rows"], key=record["ft_demo_rows"].index)
    values = _values(result)
    assert ("gd", "grad_norm_step6", 0, None) in values and ("gd", "grad_norm_step7", 0, None) not in values
    assert ("whole-gd-label", "grad_norm_step0", 0, None) in values  # full batch: one step per epoch
    assert ("whole-gd-label", "grad_norm_step1", 0, None) not in values
    assert ("gd", "kendall", None, 1) not in values  # FT's tokens are not ICL's demo tokens: no Kendall
    with pytest.raises(Exception, match="ft_shots and orderings"):
        _cfg(llama_dir, tmp_path, ft_shots=7, orderings=2)


def test_orderings_are_distinct_permutations(llama_dir, tmp_path):
    from iclgd.experiments.compare import demo_orders
    cfg = _cfg(llama_dir, tmp_path, orderings=6)
    orders = [tuple(o) for o in demo_orders(cfg, 3)]
    assert len(set(orders)) == 6 and orders[0] == (0, 1, 2)  # order 0: the sampled order; all 3! orderings
    with pytest.raises(UserError, match="6 distinct orderings asked for, but 2 demos have only 2"):
        demo_orders(cfg, 2)


def test_a_training_loss_that_rises_over_the_epochs_is_warned(capsys):
    from iclgd.experiments.compare import check_loss_fell, epoch_losses

    assert epoch_losses([4.0, 2.0, 3.0, 1.0, 2.0, 2.0], 3) == [3.0, 2.0, 2.0]
    check_loss_fell("gd", [3.0, 2.0, 2.0], 0.1, "config")
    check_loss_fell("gd", [3.0], 0.1, "config")
    assert capsys.readouterr().err == ""
    check_loss_fell("whole-gd-label", [3.0, 2.0, 3.5], 0.5, "config")
    assert "whole-gd-label's training loss rose from 3 (epoch 1) to 3.5 (epoch 3) at lr 0.5" in capsys.readouterr().err
    check_loss_fell("whole-gd-label@0.5", [3.0, 3.5], 0.5, "the method's own")
    assert "give whole-gd-label@0.5 a lower learning rate of its own (whole-gd-label@<lr>)" in capsys.readouterr().err


def test_training_whose_weights_stay_finite_but_whose_scores_overflow_fails_naming_the_lr(llama_dir, tmp_path):
    """At lr 1e30 whole-model GD leaves finite (huge) weights whose activations overflow: the FT pass's scores are
    NaN, which fails the unit as a divergence, with the lr to lower, rather than as NaN inside a metric."""
    cfg = _cfg(llama_dir, tmp_path, lr=1e30, methods=["whole-gd-label"], epochs=1, record_epochs=None, orderings=1,
               output_metrics=False, kendall_examples=0)
    with pytest.raises(UserError, match=r"whole-gd-label diverged: after epoch 1 its pass gives NaN next-token "
                                        r"scores .* give a lower learning rate"):
        run_compare(cfg, show_progress=False)
