"""`iclgd linreg critique`: Shen et al.'s critique of the ICL = GD claim, made measurable on linear regression.

- Order: Sen = mean_n Σ_o std_π f^π_o(n) over |Π| orderings of the same context (float64). Exactly invariant:
  full-batch GD, the hand-built LSA, any LSA without positions at depth 1, an unmasked LSA without positions at
  any depth. Order-sensitive: LSAs with positional encoding, causally masked LSAs with >= 2 layers, online SGD.
- Sparsity: fraction of |w| < δ of trained vs hand-built matrices, and what the construction needs.
- Perturbation: loss and cos(g, g_GD) of trained and hand-built weights plus ε·N(0, 1) noise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from iclgd.errors import UserError
from iclgd.metrics.weights import sparsity
from iclgd.synthetic.linreg.baselines import gd_predict, line_search_eta, online_sgd_predict
from iclgd.synthetic.linreg.config import CritiqueConfig, TrainConfig
from iclgd.synthetic.linreg.construction import hand_built_gd
from iclgd.synthetic.linreg.data import Tasks, generator, squared_loss, stream_seeds, torch_generator
from iclgd.synthetic.linreg.interpolate import layer_products
from iclgd.synthetic.linreg.lsa import LSA, MATRICES
from iclgd.synthetic.linreg.metrics import order_sensitivity, required_sparsity, sensitivity, sensitivity_cosine
from iclgd.synthetic.linreg.plots import order_figure, perturbation_figure, sparsity_figure
from iclgd.synthetic.linreg.run import eval_tasks, load_run, save_figure, write_table
from iclgd.synthetic.linreg.train import train_model

ORDER_FILE, SPARSITY_FILE, PERTURBATION_FILE = "order.parquet", "sparsity.parquet", "perturbation.parquet"
DEPTH_DEFAULTS = {"steps", "lr", "init_scale", "grad_clip"}  # TrainConfig fields whose default depends on depth
INVARIANCE_TOLERANCE = 1e-9  # Sen / mean |f| below this counts as invariant (float64 rounding is ~1e-16)


def expected_invariant(kind: str, layers: int = 1, causal_mask: bool = False,
                       positional_encoding: bool = False) -> bool:
    """The spec's rule: which predictors are exactly invariant to the order of the context."""
    if kind in ("gd", "hand-built"):
        return True
    if kind == "online-sgd":
        return False
    return not positional_encoding and not (causal_mask and layers >= 2)


def orderings(n_context: int, count: int, seed: int) -> list[torch.Tensor]:
    """The identity, then count − 1 seeded random permutations of range(n_context)."""
    rng = generator(seed)
    return [torch.arange(n_context)] + [torch.from_numpy(rng.permutation(n_context)) for _ in range(count - 1)]


def order_row(name: str, kind: str, predict: Callable[[Tasks], torch.Tensor], tasks: Tasks,
              orders: list[torch.Tensor], layers: int = 1, causal_mask: bool = False,
              positional_encoding: bool = False) -> dict:
    """Sen, Sen / mean |f| and the loss (given order) of one predictor, with the expected and observed sides."""
    with torch.no_grad():
        predictions = torch.stack([predict(tasks.permute_context(order)) for order in orders])
    sen = order_sensitivity(predictions)
    scale = float(predictions.abs().mean())
    relative = sen / scale if scale != 0 else 0.0  # every prediction 0 (a zero model): none moves; NaN stays NaN
    expected = expected_invariant(kind, layers, causal_mask, positional_encoding)
    return {"name": name, "kind": kind, "layers": layers, "causal_mask": causal_mask,
            "positional_encoding": positional_encoding, "sensitivity": sen, "relative_sensitivity": relative,
            "loss": float(squared_loss(predictions[0], tasks.y_query)),
            "expected": "invariant" if expected else "sensitive",
            "observed": "invariant" if relative < INVARIANCE_TOLERANCE else "sensitive"}


def lsa_predictor(model: LSA) -> Callable[[Tasks], torch.Tensor]:
    model = copy.deepcopy(model).to(torch.float64)
    return lambda tasks: model(tasks.x, tasks.y, tasks.x_query)


def describe(config: TrainConfig) -> str:
    flags = (("recurrent", config.recurrent), ("causal", config.causal_mask), ("PE", config.positional_encoding))
    parts = [f"{config.layers}L"] + [name for name, on in flags if on]
    return "LSA " + " ".join(parts)


def order_experiment(train_config: TrainConfig, trained: LSA, eta: float, config: CritiqueConfig,
                     progress: bool = True) -> list[dict]:
    """Rows of the order table: the run's LSA, trained variants (plain / causal / PE at each depth), the
    hand-built LSA, full-batch GD and online SGD."""
    tasks = eval_tasks(train_config, n_tasks=config.order_tasks)
    orders = orderings(train_config.n_context, config.orderings, stream_seeds(train_config.seed)["critique"])
    steps = train_config.layers
    rows = [order_row(f"{describe(train_config)} (run)", "lsa", lsa_predictor(trained), tasks, orders,
                      steps, train_config.causal_mask, train_config.positional_encoding)]
    for depth in config.order_depths:
        for causal_mask, positional_encoding in ((False, False), (True, False), (False, True)):
            # The run's data settings; the recipe's depth-dependent defaults (lr, init, clipping) re-resolved.
            variant = TrainConfig.model_validate({
                **train_config.model_dump(exclude=DEPTH_DEFAULTS | {"out"}), "layers": depth, "recurrent": False,
                "causal_mask": causal_mask, "positional_encoding": positional_encoding,
                "steps": config.variant_steps, "eval_tasks": min(train_config.eval_tasks, 1000),
                "eval_every": max(config.variant_steps, 1)})
            same = {"steps", "eval_tasks", "eval_every", "out"}
            if variant.model_dump(exclude=same) == train_config.model_dump(exclude=same):
                continue  # the run itself is already in the table
            diverged = (f"that is the order table's variant {describe(variant)}, which takes its depth's own lr, "
                        "init and clipping, not the run's: leave its depth out of order_depths (a --config file); "
                        "no critique results were written")
            model = train_model(variant, progress, description=f"train {describe(variant)}", diverged=diverged).model
            rows.append(order_row(describe(variant), "lsa", lsa_predictor(model),
                                  tasks, orders, depth, causal_mask, positional_encoding))
    d, m, n_context = train_config.d, train_config.m, train_config.n_context
    rows.append(order_row(f"hand-built LSA (K={steps})", "hand-built",
                          lsa_predictor(hand_built_gd(d, m, n_context, eta, steps=steps)), tasks, orders, steps))
    rows.append(order_row(f"full-batch GD (K={steps})", "gd", lambda t: gd_predict(t, eta, steps), tasks, orders,
                          steps))
    rows.append(order_row(f"online SGD ({config.sgd_epochs} pass)", "online-sgd",
                          lambda t: online_sgd_predict(t, eta / n_context, config.sgd_epochs), tasks, orders))
    return rows


def sparsity_rows(models: dict[str, LSA], thresholds: list[float]) -> list[dict]:
    """Rows (model, matrix, layer, threshold, sparsity) for W_Q, W_K, W_V, P and the products W_KᵀW_Q, P W_V,
    per stored layer and their mean ('mean')."""
    rows = []
    for model_name, model in models.items():
        n_sets = len(model.W_Q)
        for matrix_name in (*MATRICES, "W_K^T W_Q", "P W_V"):
            for threshold in thresholds:
                values = []
                for layer in range(n_sets):
                    if matrix_name in MATRICES:
                        matrix = getattr(model, matrix_name)[layer].detach()
                    else:
                        matrix = layer_products(model, layer)[0 if matrix_name == "W_K^T W_Q" else 1]
                    values.append(sparsity(matrix, threshold))
                    rows.append({"model": model_name, "matrix": matrix_name, "layer": str(layer),
                                 "threshold": threshold, "sparsity": values[-1]})
                rows.append({"model": model_name, "matrix": matrix_name, "layer": "mean", "threshold": threshold,
                             "sparsity": float(np.mean(values))})
    return rows


def perturbed(model: LSA, epsilon: float, gen: torch.Generator) -> tuple[LSA, float]:
    """(copy of `model` with every matrix + ε·N(0, 1), |ΔW|/|W| over all matrices together)."""
    noisy = copy.deepcopy(model)
    change, norm = 0.0, 0.0
    with torch.no_grad():
        for name in MATRICES:
            for matrix in getattr(noisy, name):
                noise = epsilon * torch.randn(matrix.shape, generator=gen, dtype=matrix.dtype)
                norm += float((matrix**2).sum())
                change += float((noise**2).sum())
                matrix.add_(noise)
    return noisy, (change / norm) ** 0.5 if norm > 0 else float("inf")


def perturbation_rows(models: dict[str, LSA], tasks: Tasks, g_gd: torch.Tensor, config: CritiqueConfig,
                      seed: int) -> list[dict]:
    """Rows (model, epsilon, relative_change, loss, cosine_vs_gd), each the mean over `noise_repeats` draws."""
    rows = []
    for model_name, model in models.items():
        gen = torch_generator(seed)
        for epsilon in config.noise_scales:
            draws = []
            for _ in range(config.noise_repeats if epsilon > 0 else 1):
                noisy, relative_change = perturbed(model, epsilon, gen)
                with torch.no_grad():
                    loss = float(squared_loss(noisy(tasks.x, tasks.y, tasks.x_query), tasks.y_query))
                draws.append((relative_change, loss, sensitivity_cosine(sensitivity(noisy, tasks), g_gd)))
            mean = np.mean(draws, axis=0)
            rows.append({"model": model_name, "epsilon": epsilon, "relative_change": float(mean[0]),
                         "loss": float(mean[1]), "cosine_vs_gd": float(mean[2])})
    return rows


def critique(run_dir: str | Path, config: CritiqueConfig | None = None, progress: bool = True) -> dict:
    """Run the three experiments on a run folder; write their Parquet files and plots; return their rows."""
    config = config or CritiqueConfig()
    run_dir = Path(run_dir)
    train_config, trained = load_run(run_dir)
    steps, d, m, n_context = train_config.layers, train_config.d, train_config.m, train_config.n_context
    if n_context < 2:  # one ordering: every predictor would read as order-invariant
        raise UserError("the run's context holds n = 1 example, which has one ordering: the order table cannot tell a "
                        "sensitive predictor from an invariant one; critique a run trained with --n 2 or more")
    eta, _ = line_search_eta(eval_tasks(train_config), steps)
    hand_built = hand_built_gd(d, m, n_context, eta, steps=steps)
    seeds = stream_seeds(train_config.seed)

    order = order_experiment(train_config, trained, eta, config, progress)
    write_table(order, run_dir / ORDER_FILE, train_config, {"orderings": config.orderings, "eta": eta})
    save_figure(order_figure(order), run_dir / "order")

    models = {"trained": trained, "hand-built": hand_built}
    needed = required_sparsity(d, m)
    sparse = sparsity_rows(models, config.thresholds)
    write_table(sparse, run_dir / SPARSITY_FILE, train_config,
                {"required_sparsity": needed, "required_sparsity_m_equals_d": required_sparsity(d)})
    save_figure(sparsity_figure(sparse, needed), run_dir / "sparsity")

    tasks = eval_tasks(train_config, n_tasks=config.noise_tasks)
    g_gd = sensitivity(hand_built, tasks)
    noise = perturbation_rows(models, tasks, g_gd, config, seeds["critique"])
    write_table(noise, run_dir / PERTURBATION_FILE, train_config, {"noise_repeats": config.noise_repeats})
    save_figure(perturbation_figure(noise), run_dir / "perturbation")
    return {"run": str(run_dir), "eta": eta, "order": order, "sparsity": sparse, "required_sparsity": needed,
            "perturbation": noise}
