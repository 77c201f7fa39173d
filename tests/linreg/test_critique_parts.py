"""Pieces of compare/critique: sweep grids, weight noise, sparsity rows, the alignment of the hand-built model."""

import pytest
import torch

from iclgd.synthetic.linreg.compare import alignment_rows, summarise
from iclgd.synthetic.linreg.construction import hand_built_gd, hand_built_gd_plus_plus
from iclgd.synthetic.linreg.critique import perturbed, sparsity_rows
from iclgd.synthetic.linreg.ood import sweep_values


def test_official_sweep_grids():
    alphas, scales = sweep_values(0.5, 2.0, 0.03), sweep_values(0.5, 5.0, 0.1)
    assert len(alphas) == 51 and alphas[0] == 0.5 and alphas[-1] == 2.0 and alphas[1] == 0.53
    assert len(scales) == 46 and scales[-1] == 5.0


def test_weight_noise_and_relative_change():
    model = hand_built_gd(4, 1, 6, eta=2.0)
    same, change = perturbed(model, 0.0, torch.Generator().manual_seed(0))
    assert change == 0.0 and torch.equal(same.W_Q[0], model.W_Q[0])
    noisy, change = perturbed(model, 0.1, torch.Generator().manual_seed(0))
    delta = torch.cat([(a - b).detach().flatten() for a, b in zip(noisy.parameters(), model.parameters(), strict=True)])
    norm = torch.cat([p.detach().flatten() for p in model.parameters()]).norm()
    assert change == pytest.approx(float(delta.norm() / norm))
    assert delta.std().item() == pytest.approx(0.1, rel=0.15)


def test_sparsity_rows_of_the_construction():
    model = hand_built_gd(4, 1, 6, eta=2.0)  # W_0 = 0: W_K has 4 non-zeros, W_V 1, P 1 of 25
    rows = sparsity_rows({"hand-built": model}, [1e-3])
    by_matrix = {r["matrix"]: r["sparsity"] for r in rows if r["layer"] == "mean"}
    assert by_matrix["W_K"] == pytest.approx(21 / 25) and by_matrix["W_V"] == pytest.approx(24 / 25)
    assert by_matrix["P"] == pytest.approx(24 / 25) and by_matrix["W_K^T W_Q"] == pytest.approx(21 / 25)


def test_alignment_of_gd_with_itself(tasks64):
    gd = hand_built_gd(4, 1, 6, eta=2.0, steps=2)
    models = {"trained": hand_built_gd(4, 1, 6, eta=2.0, steps=2), "gd": gd,
              "gd++": hand_built_gd_plus_plus(4, 1, 6, [2.0, 2.0], [0.0, 0.0])}
    summary = summarise(alignment_rows(models, tasks64))
    assert summary["vs_gd"]["trained"]["sensitivity_cosine"] == pytest.approx(1.0, abs=1e-7)
    assert summary["vs_gd"]["trained"]["sensitivity_l2"] == pytest.approx(0.0, abs=1e-12)
    assert summary["vs_gd++"]["trained"]["prediction_difference"] == pytest.approx(0.0, abs=1e-12)
    assert summary["loss_gap_vs_gd"] == pytest.approx(0.0, abs=1e-12)


def test_alignment_values_carry_their_interval_over_tasks(tasks64):
    """Each value is the mean of its per-task values, with the seeded bootstrap interval of that mean; the loss gap
    to GD is the paired per-task difference."""
    import torch

    from iclgd.metrics import bootstrap_ci
    from iclgd.synthetic.linreg.data import squared_loss_per_task
    from iclgd.synthetic.linreg.metrics import sensitivity, sensitivity_cosine_per_task

    models = {"trained": hand_built_gd(4, 1, 6, eta=1.5), "gd": hand_built_gd(4, 1, 6, eta=2.0)}
    rows = {(r["model"], r["reference"], r["metric"]): r for r in alignment_rows(models, tasks64, seed=3)}
    with torch.no_grad():
        losses = {n: squared_loss_per_task(m(tasks64.x, tasks64.y, tasks64.x_query), tasks64.y_query)
                  for n, m in models.items()}
    gap = losses["trained"] - losses["gd"]
    row = rows[("trained", "gd", "loss_vs_gd")]
    low, high = bootstrap_ci(gap, 3, "linreg/gd/loss_vs_gd")
    assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx((float(gap.mean()), float(low), float(high)))
    assert row["value"] == pytest.approx(rows[("trained", "", "loss")]["value"] - rows[("gd", "", "loss")]["value"])
    cosine = sensitivity_cosine_per_task(sensitivity(models["trained"], tasks64), sensitivity(models["gd"], tasks64))
    row = rows[("trained", "gd", "sensitivity_cosine")]
    assert row["value"] == pytest.approx(float(cosine.mean())) and row["ci_low"] <= row["value"] <= row["ci_high"]
    summary = summarise(list(rows.values()))
    assert summary["ci"][("trained", "", "loss")] == (rows[("trained", "", "loss")]["ci_low"],
                                                      rows[("trained", "", "loss")]["ci_high"])


def test_equal_losses_get_equal_intervals(tasks64):
    """The interval resamples the eval tasks the same way for every model (paired): for one layer GD++ with γ = 0
    is GD, and its loss row is GD's, interval included."""
    models = {"trained": hand_built_gd(4, 1, 6, eta=1.5), "gd": hand_built_gd(4, 1, 6, eta=2.0),
              "gd++": hand_built_gd_plus_plus(4, 1, 6, [2.0], [0.0])}
    rows = {(r["model"], r["metric"]): r for r in alignment_rows(models, tasks64, seed=3) if r["reference"] == ""}
    gd, gd_plus_plus = rows[("gd", "loss")], rows[("gd++", "loss")]
    assert (gd["value"], gd["ci_low"], gd["ci_high"]) == (gd_plus_plus["value"], gd_plus_plus["ci_low"],
                                                          gd_plus_plus["ci_high"])
    assert rows[("trained", "loss")]["ci_low"] != gd["ci_low"]
