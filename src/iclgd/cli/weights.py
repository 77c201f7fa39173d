"""`iclgd weights …`: Shen et al.'s weight-space analyses (parse flags, call iclgd.experiments.weights).

    iclgd weights sparsity    --model smollm2-135m --out results/weights/smollm2
    iclgd weights perturb     --model smollm2-135m --task vader-movie -k 8 --sigma 1e-3 --sigma 1e-2 --out DIR
    iclgd weights checkpoints --run models/icc --task icc-heldout -k 16 --out DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

weights_app = typer.Typer(
    help="Weight-space analyses (Shen et al. 2024): sparsity vs the construction, ICL under weight change.",
    no_args_is_help=True,
)

MODEL_HELP = "hub id, folder, .gguf file or named model (iclgd models)"
THRESHOLD_HELP = "sparsity threshold δ (repeat; default 1e-2 … 1e-6)"
WEIGHTS_HELP = "matrices measured: all (every >= 2-D parameter) | blocks (no embeddings/unembedding) | qkv"


def _default_out(kind: str, name: str) -> Path:
    return Path("results/weights") / kind / Path(name).name


@weights_app.command()
def sparsity(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    threshold: Annotated[list[float] | None, typer.Option("--threshold", help=THRESHOLD_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default results/weights/sparsity/<model>)")] = None,
) -> None:
    """Sparsity of W_Q, W_K, W_V per layer at each δ, beside what von Oswald's construction needs at width d."""
    from iclgd.experiments.weights import run_sparsity
    from iclgd.metrics.weights import THRESHOLDS
    from iclgd.report.console import console
    from iclgd.report.weights import sparsity_table

    target = out if out is not None else _default_out("sparsity", model)
    rows, record, paths = run_sparsity(model, target, thresholds=tuple(threshold) if threshold else THRESHOLDS)
    printer = console()
    caption = (f"% of |w| < δ, mean over layers; construction at d = {record['hidden_size']} (the model's width, "
               f"as Shen et al. compare: tokens (x, y) of width 2d = {2 * record['hidden_size']})")
    printer.print(sparsity_table(rows, title=f"Sparsity of {model} ({record['n_layers']} layers)", caption=caption))
    printer.print("wrote " + ", ".join(str(p) for p in paths))


@weights_app.command()
def perturb(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    task: Annotated[str, typer.Option(help="built-in task name or task file")],
    k: Annotated[int, typer.Option("--k", "-k", help="demonstrations")] = 8,
    sigma: Annotated[list[float] | None, typer.Option("--sigma", help="noise scale σ (repeat; default 0, 1e-4 … 3e-2)")
                     ] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="demo seed, and the noise's with σ (repeat; "
                                                     "default 1, compare's)")] = None,
    weights: Annotated[str, typer.Option(help=WEIGHTS_HELP)] = "all",
    eval_size: Annotated[int, typer.Option(min=1, help="eval rows")] = 100,
    template: Annotated[int, typer.Option(min=0, help="template index in the task file")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="eval examples per forward pass")] = 16,
    out: Annotated[Path | None, typer.Option(help="output folder (default results/weights/perturb/<model>)")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
) -> None:
    """ICL accuracy as the weights get N(0, σ²) noise, against the relative weight change |ΔW|/|W|."""
    from iclgd.experiments.weights import DEFAULT_SIGMAS, run_perturbation
    from iclgd.report.console import console
    from iclgd.report.weights import perturb_table
    from iclgd.tasks import task_name

    target = out if out is not None else _default_out("perturb", model)
    points, record, paths = run_perturbation(
        model, task, target, k=k, sigmas=tuple(sigma) if sigma else DEFAULT_SIGMAS, seeds=tuple(seed or (1,)),
        weights=weights, eval_size=eval_size, template=template, batch_size=batch_size, device=device,
        show_progress=progress)
    printer = console()
    caption = (f"noise on {record['n_matrices']} matrices ({weights}); {record['eval_size']} eval rows; "
               f"chance {record['chance']:.3f}, majority label {record['majority']:.3f}")
    printer.print(perturb_table(points, title=f"ICL under weight noise: {model} on {task_name(task)}, k = {k}",
                                caption=caption))
    printer.print("wrote " + ", ".join(str(p) for p in paths))


@weights_app.command()
def checkpoints(
    run: Annotated[Path, typer.Option(help="pretrain run folder (iclgd pretrain --keep-every N) or a folder of "
                                           "model folders named by step")],
    task: Annotated[str, typer.Option(help="built-in task name or task file")],
    k: Annotated[int, typer.Option("--k", "-k", help="demonstrations")] = 8,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="demo seed (repeat; default 1, compare's)")
                    ] = None,
    reference: Annotated[str, typer.Option(help="weight changes are measured from the final | first checkpoint")
                         ] = "final",
    weights: Annotated[str, typer.Option(help=WEIGHTS_HELP)] = "all",
    threshold: Annotated[list[float] | None, typer.Option("--threshold", help=THRESHOLD_HELP)] = None,
    eval_size: Annotated[int, typer.Option(min=1, help="eval rows")] = 100,
    template: Annotated[int, typer.Option(min=0, help="template index in the task file")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="eval examples per forward pass")] = 16,
    out: Annotated[Path | None, typer.Option(help="output folder (default results/weights/checkpoints/<run>)")
                   ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
) -> None:
    """ICL accuracy, relative weight change and sparsity over a run's kept checkpoints."""
    from iclgd.experiments.weights import run_checkpoints
    from iclgd.metrics.weights import THRESHOLDS
    from iclgd.report.console import console
    from iclgd.report.weights import checkpoint_table
    from iclgd.tasks import task_name

    target = out if out is not None else _default_out("checkpoints", str(run))
    points, sparsity_rows, record, paths = run_checkpoints(
        run, task, target, k=k, seeds=tuple(seed or (1,)), reference=reference, weights=weights,
        thresholds=tuple(threshold) if threshold else THRESHOLDS, eval_size=eval_size, template=template,
        batch_size=batch_size, device=device, show_progress=progress)
    printer = console()
    printer.print(checkpoint_table(points, sparsity_rows,
                                   title=f"Checkpoints of {run} on {task_name(task)}, k = {k}",
                                   caption=f"|ΔW|/|W| to the {reference} checkpoint (step {record['reference_step']}) "
                                           f"over {record['n_matrices']} matrices ({weights}); chance "
                                           f"{record['chance']:.3f}, majority label {record['majority']:.3f}"))
    printer.print("wrote " + ", ".join(str(p) for p in paths))


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
