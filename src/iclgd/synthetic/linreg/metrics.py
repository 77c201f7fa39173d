"""Metrics of the linear-regression setting: alignment with GD (von Oswald et al.) and Shen et al.'s critiques.

All are per eval task (the ``*_per_task`` functions), then the mean over tasks; ``compare`` gives each mean its
bootstrap interval over the tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from iclgd.synthetic.linreg.data import Tasks

Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # f(x, y, x_query) -> (B, m)


def prediction_difference_per_task(prediction_a: torch.Tensor, prediction_b: torch.Tensor) -> torch.Tensor:
    """||f_a(n) − f_b(n)||₂ per task (for m = 1 the absolute difference), (B,)."""
    return (prediction_a - prediction_b).norm(dim=-1)


def prediction_difference(prediction_a: torch.Tensor, prediction_b: torch.Tensor) -> float:
    """mean_n ||f_a(n) − f_b(n)||₂."""
    return float(prediction_difference_per_task(prediction_a, prediction_b).mean())


def sensitivity(predict: Predictor, tasks: Tasks) -> torch.Tensor:
    """g = ∂f/∂x_q per task, (B, m·d): the model's sensitivity to its query input (tasks are independent)."""
    x_query = tasks.x_query.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        prediction = predict(tasks.x, tasks.y, x_query)
        rows = [torch.autograd.grad(prediction[:, o].sum(), x_query, retain_graph=o + 1 < prediction.shape[1])[0]
                for o in range(prediction.shape[1])]
    return torch.cat(rows, dim=-1)


def sensitivity_cosine_per_task(g_a: torch.Tensor, g_b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """⟨g_a/(||g_a|| + eps), g_b/(||g_b|| + eps)⟩ per task, (B,): the official form of cos(g_TF, g_GD)."""
    unit_a = g_a / (g_a.norm(dim=-1, keepdim=True) + eps)
    unit_b = g_b / (g_b.norm(dim=-1, keepdim=True) + eps)
    return (unit_a * unit_b).sum(-1)


def sensitivity_cosine(g_a: torch.Tensor, g_b: torch.Tensor, eps: float = 1e-8) -> float:
    """mean_n cos(g_a(n), g_b(n)) in the official form."""
    return float(sensitivity_cosine_per_task(g_a, g_b, eps).mean())


def sensitivity_l2_per_task(g_a: torch.Tensor, g_b: torch.Tensor) -> torch.Tensor:
    """||g_a − g_b||₂ per task (not squared), (B,)."""
    return (g_a - g_b).norm(dim=-1)


def sensitivity_l2(g_a: torch.Tensor, g_b: torch.Tensor) -> float:
    """mean_n ||g_a − g_b||₂."""
    return float(sensitivity_l2_per_task(g_a, g_b).mean())


def order_sensitivity(predictions: torch.Tensor) -> float:
    """Sen = mean_n Σ_o std_π f^π_o(n), population std (ddof 0) over the orderings; predictions (|Π|, B, m)."""
    return float(predictions.std(dim=0, correction=0).sum(-1).mean())


def required_sparsity(d: int, m: int | None = None) -> dict[str, float]:
    """Sparsity the von Oswald construction needs at width d + m (Shen et al. take m = d, width 2d).

    W_K, W_Q: d non-zeros (the I_d block): 1 − d/(d+m)². W_V: a dense W_0 (m·d) and −I_m: 1 − (m·d + m)/(d+m)².
    With m = d: 1 − d/(2d)² and 1 − (d² + d)/(2d)², `iclgd.metrics.weights.construction_sparsity(d)`.
    """
    m = d if m is None else m
    width_squared = (d + m) ** 2
    key_query = 1.0 - d / width_squared
    return {"W_Q": key_query, "W_K": key_query, "W_V": 1.0 - (m * d + m) / width_squared}
