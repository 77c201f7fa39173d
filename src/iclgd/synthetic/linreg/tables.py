"""Rich tables of the linear-regression results, for the terminal."""

from __future__ import annotations

from rich.table import Table


def with_ci(summary: dict, key: tuple[str, str, str], value: float, digits: int = 4, sign: str = "") -> str:
    """A value and its 95% bootstrap interval over the eval tasks, where the summary has one."""
    text = f"{value:{sign}.{digits}f}"
    ci = summary.get("ci", {}).get(key)
    return text if ci is None else f"{text} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"


def compare_table(summary: dict) -> Table:
    """Losses and alignment of the trained LSA (and the interpolated model) with GD and GD++, each a mean over the
    eval tasks with its 95% bootstrap interval."""
    layers = summary.get("layers", 1)
    table = Table(title=f"{layers}-layer LSA vs GD ({summary['run'] if 'run' in summary else ''}); "
                        "[95% bootstrap CI over eval tasks]")
    for column in ("model", "loss", "vs", "cos(g, g_ref)", "||g − g_ref||", "|f − f_ref|"):
        table.add_column(column, justify="left" if column in ("model", "vs") else "right")
    for model, loss in summary["loss"].items():
        references = [r for r in ("gd", "gd++") if model in summary[f"vs_{r}"]] or [""]
        for index, reference in enumerate(references):
            metrics = summary[f"vs_{reference}"][model] if reference else {}
            table.add_row(model if index == 0 else "", with_ci(summary, (model, "", "loss"), loss) if index == 0
                          else "", reference,
                          *(with_ci(summary, (model, reference, k), metrics[k]) if k in metrics else "" for k in
                            ("sensitivity_cosine", "sensitivity_l2", "prediction_difference")))
    eta = summary["eta"]
    gap = summary["vs_gd"].get("trained", {}).get("loss_vs_gd")
    paired = "" if gap is None else (
        f" (paired, TF − GD per task: {with_ci(summary, ('trained', 'gd', 'loss_vs_gd'), gap, sign='+')})")
    table.caption = (f"η line search {eta.get('gd:eta_line_search', float('nan')):.4f}, one-step closed form "
                     f"{eta.get('gd:eta_closed_form_one_step', float('nan')):.4f}; "
                     f"TF loss vs GD {100 * summary['loss_gap_vs_gd']:+.2f}%{paired}")
    return table


def order_table(rows: list[dict], variant_steps: int | None = None) -> Table:
    table = Table(title="order sensitivity: Sen over context orderings (float64)")
    if variant_steps is not None:
        table.caption = f"LSA variants trained {variant_steps} steps; online SGD lr η/N; (!) marks a broken rule"
    for column in ("predictor", "Sen", "Sen/|f|", "loss", "expected", "observed"):
        table.add_column(column, justify="left" if column in ("predictor", "expected", "observed") else "right")
    for row in rows:
        mark = "" if row["expected"] == row["observed"] else " (!)"
        table.add_row(row["name"], f"{row['sensitivity']:.2e}", f"{row['relative_sensitivity']:.2e}",
                      f"{row['loss']:.4f}", row["expected"], row["observed"] + mark)
    return table


def sparsity_table(rows: list[dict], required: dict[str, float]) -> Table:
    thresholds = sorted({r["threshold"] for r in rows}, reverse=True)
    table = Table(title="sparsity: fraction |w| < δ (mean over layers)")
    table.caption = "needed: the construction's sparsity at width d + m (W_0 dense)"
    table.add_column("model")
    table.add_column("matrix")
    for threshold in thresholds:
        table.add_column(f"δ={threshold:.0e}", justify="right")
    table.add_column("needed", justify="right")
    cells = {(r["model"], r["matrix"], r["threshold"]): r["sparsity"] for r in rows if r["layer"] == "mean"}
    for model, matrix in dict.fromkeys((r["model"], r["matrix"]) for r in rows):
        needed = f"{required[matrix]:.4f}" if matrix in required else ""
        table.add_row(model, matrix, *(f"{cells[(model, matrix, t)]:.3f}" for t in thresholds), needed)
    return table


def perturbation_table(rows: list[dict]) -> Table:
    table = Table(title="weight noise: w + ε·N(0, 1)")
    for column in ("model", "ε", "|ΔW|/|W|", "loss", "cos(g, g_GD)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(row["model"], f"{row['epsilon']:g}", f"{row['relative_change']:.2e}", f"{row['loss']:.4g}",
                      f"{row['cosine_vs_gd']:.4f}")
    return table


def ood_table(rows: list[dict], every: int = 10) -> Table:
    """Every `every`-th point of each sweep, one column per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    table = Table(title="out-of-distribution loss")
    table.add_column("sweep")
    table.add_column("value", justify="right")
    for model in models:
        table.add_column(model, justify="right")
    for sweep in dict.fromkeys(r["sweep"] for r in rows):
        values = list(dict.fromkeys(r["value"] for r in rows if r["sweep"] == sweep))
        losses = {(r["value"], r["model"]): r["loss"] for r in rows if r["sweep"] == sweep}
        for value in values[::every] + ([values[-1]] if (len(values) - 1) % every else []):
            table.add_row(sweep, f"{value:g}", *(f"{losses[(value, m)]:.4g}" for m in models))
    return table

