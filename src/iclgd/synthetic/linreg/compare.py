"""`iclgd linreg compare`: is the trained LSA doing gradient descent? (von Oswald et al. 2023, Fig. 2-4)

On the run's fixed eval set (float64): losses of the trained LSA (TF), K steps of GD (η line-searched; the
one-step closed form reported too), K steps of GD++ ((η_l, γ_l) fitted) and the interpolated model; and,
against GD and GD++, the prediction difference, cos and L2 distance of the sensitivities g = ∂f/∂x_q.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch

from iclgd.metrics.bootstrap import bootstrap_ci
from iclgd.synthetic.linreg.baselines import closed_form_eta, fit_gd_plus_plus, line_search_eta
from iclgd.synthetic.linreg.config import CompareConfig, TrainConfig
from iclgd.synthetic.linreg.construction import hand_built_gd, hand_built_gd_plus_plus
from iclgd.synthetic.linreg.data import Tasks, squared_loss_per_task
from iclgd.synthetic.linreg.interpolate import interpolate
from iclgd.synthetic.linreg.lsa import LSA
from iclgd.synthetic.linreg.metrics import (
    prediction_difference_per_task,
    sensitivity,
    sensitivity_cosine_per_task,
    sensitivity_l2_per_task,
)
from iclgd.synthetic.linreg.ood import ood_sweeps
from iclgd.synthetic.linreg.plots import comparison_figure, ood_figure
from iclgd.synthetic.linreg.run import CURVE_FILE, eval_tasks, load_run, save_figure, write_table

COMPARE_FILE = "compare.parquet"
OOD_FILE = "ood.parquet"


def reference_models(trained: LSA, tasks: Tasks, fit_iterations: int = 100) -> tuple[dict[str, LSA], list[dict]]:
    """({'trained', 'gd', 'gd++'[, 'interpolated']}: float64 LSAs, rows of the step sizes used).

    GD: K steps with one η, line-searched on `tasks`. GD++: (η_l, γ_l) fitted on `tasks` (at K = 1 it is GD).
    The interpolated model exists for one layer (trained and GD++ weights averaged) and for a recurrent model
    (trained and GD's weights averaged: one shared layer with one shared layer; GD++'s layers differ, and averaging
    the shared trained layer with each of them gives a model between neither).
    """
    d, m, n_context, steps = trained.d, trained.m, trained.n_context, trained.layers
    eta, _ = line_search_eta(tasks, steps)
    if steps == 1:
        etas, gammas = [eta], [0.0]  # one GD++ layer predicts exactly as one GD step
    else:
        etas, gammas, _ = fit_gd_plus_plus(tasks, steps, eta, fit_iterations)
    gd_plus_plus = hand_built_gd_plus_plus(d, m, n_context, etas, gammas)
    models = {"trained": trained, "gd": hand_built_gd(d, m, n_context, eta, steps=steps), "gd++": gd_plus_plus}
    interpolated = interpolate(trained, models["gd"] if trained.recurrent else gd_plus_plus)
    if interpolated is not None:
        models["interpolated"] = interpolated
    rows = [{"model": "gd", "reference": "", "metric": "eta_line_search", "value": eta},
            {"model": "gd", "reference": "", "metric": "eta_closed_form_one_step", "value": closed_form_eta(tasks)}]
    for layer, (eta_l, gamma_l) in enumerate(zip(etas, gammas, strict=True)):
        rows.append({"model": "gd++", "reference": "", "metric": f"eta_layer{layer}", "value": float(eta_l)})
        rows.append({"model": "gd++", "reference": "", "metric": f"gamma_layer{layer}", "value": float(gamma_l)})
    return models, rows


def _row(model: str, reference: str, metric: str, per_task: torch.Tensor, seed: int) -> dict:
    """The mean over tasks with its 95% bootstrap interval over the eval tasks (seeded by the run's seed). Every
    model draws the same resamples of the tasks for a metric (paired): equal per-task values, such as GD's and
    GD++'s losses for one layer, get equal intervals."""
    low, high = bootstrap_ci(per_task, seed, f"linreg/{reference}/{metric}")
    return {"model": model, "reference": reference, "metric": metric, "value": float(per_task.mean()),
            "ci_low": float(low), "ci_high": float(high)}


def alignment_rows(models: dict[str, LSA], tasks: Tasks, seed: int = 0) -> list[dict]:
    """Losses of every model, and each model's loss minus GD's on the same tasks (``loss_vs_gd``, a paired
    difference); prediction difference, sensitivity cos and L2 of each model vs GD and GD++. Every value is a mean
    over the eval tasks with its 95% bootstrap interval over them."""
    rows, predictions, sensitivities, losses = [], {}, {}, {}
    for name, model in models.items():
        with torch.no_grad():
            predictions[name] = model(tasks.x, tasks.y, tasks.x_query)
        sensitivities[name] = sensitivity(model, tasks)
        losses[name] = squared_loss_per_task(predictions[name], tasks.y_query)
        rows.append(_row(name, "", "loss", losses[name], seed))
    rows += [_row(name, "gd", "loss_vs_gd", losses[name] - losses["gd"], seed) for name in models if name != "gd"]
    references = ("gd",) if models["trained"].layers == 1 else ("gd", "gd++")  # one GD++ layer is one GD step
    for reference in references:
        for name in (n for n in models if n != reference and not (n == "gd" and reference == "gd++")):
            g_model, g_reference = sensitivities[name], sensitivities[reference]
            rows += [
                _row(name, reference, "prediction_difference",
                     prediction_difference_per_task(predictions[name], predictions[reference]), seed),
                _row(name, reference, "sensitivity_cosine", sensitivity_cosine_per_task(g_model, g_reference), seed),
                _row(name, reference, "sensitivity_l2", sensitivity_l2_per_task(g_model, g_reference), seed),
            ]
    return rows


def compare(run_dir: str | Path, config: CompareConfig | None = None) -> dict:
    """Write compare.parquet (+ .png/.pdf) and, with `config.ood`, ood.parquet (+ plots); return the summary."""
    config = config or CompareConfig()
    run_dir = Path(run_dir)
    train_config, trained = load_run(run_dir)
    tasks = eval_tasks(train_config)
    models, eta_rows = reference_models(trained, tasks, config.fit_iterations)
    rows = alignment_rows(models, tasks, train_config.seed) + eta_rows
    write_table(rows, run_dir / COMPARE_FILE, train_config, {"eval_tasks": len(tasks)})
    curve = pq.read_table(run_dir / CURVE_FILE).to_pydict()
    save_figure(comparison_figure(curve, rows, train_config.layers), run_dir / "compare")
    summary = summarise(rows)
    summary.update(run=str(run_dir), layers=train_config.layers, files=[COMPARE_FILE, "compare.png", "compare.pdf"])
    if config.ood:
        summary["ood"] = write_ood(run_dir, train_config, models, config)
        summary["files"] += [OOD_FILE, "ood.png", "ood.pdf"]
    return summary


def write_ood(run_dir: Path, train_config: TrainConfig, models: dict[str, LSA], config: CompareConfig) -> list[dict]:
    """The OOD sweeps (GD++ left out at one layer, where it is GD), as ood.parquet and ood.png/pdf."""
    if train_config.layers == 1:
        models = {name: model for name, model in models.items() if name != "gd++"}
    rows = ood_sweeps(train_config, models, config)
    write_table(rows, run_dir / OOD_FILE, train_config, {"ood_tasks": config.ood_tasks})
    save_figure(ood_figure(rows, train_config), run_dir / "ood")
    return rows


def ood(run_dir: str | Path, config: CompareConfig | None = None) -> list[dict]:
    """`iclgd linreg ood`: only the out-of-distribution sweeps of TF vs GD (and GD++, interpolated)."""
    config = config or CompareConfig()
    run_dir = Path(run_dir)
    train_config, trained = load_run(run_dir)
    models, _ = reference_models(trained, eval_tasks(train_config), config.fit_iterations)
    return write_ood(run_dir, train_config, models, config)


def summarise(rows: list[dict]) -> dict:
    """{'loss': {model: value}, 'vs_gd': {model: {metric: value}}, 'vs_gd++': …, 'eta': …, 'loss_gap_vs_gd': …,
    'ci': {(model, reference, metric): (low, high)}} (reference '' for a model's own loss)."""
    summary: dict = {"loss": {}, "vs_gd": {}, "vs_gd++": {}, "eta": {}, "ci": {}}
    for row in rows:
        if row.get("ci_low") is not None:
            summary["ci"][(row["model"], row["reference"], row["metric"])] = (row["ci_low"], row["ci_high"])
        if row["metric"] == "loss":
            summary["loss"][row["model"]] = row["value"]
        elif row["reference"]:
            summary[f"vs_{row['reference']}"].setdefault(row["model"], {})[row["metric"]] = row["value"]
        else:
            summary["eta"][f"{row['model']}:{row['metric']}"] = row["value"]
    summary["loss_gap_vs_gd"] = summary["loss"]["trained"] / summary["loss"]["gd"] - 1.0
    return summary
