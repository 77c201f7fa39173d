"""`iclgd linreg …`: von Oswald et al.'s linear-regression setting and Shen et al.'s critiques of it.

    iclgd linreg train    --layers 1 --steps 5000 --out runs/lsa1
    iclgd linreg compare  --run runs/lsa1
    iclgd linreg critique --run runs/lsa1
    iclgd linreg ood      --run runs/lsa1
Each also takes --config FILE (configs/linreg/*.yaml); flags given on the command line win.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from iclgd.errors import UserError

linreg_app = typer.Typer(
    help="Linear regression with linear self-attention (von Oswald et al. 2023; Shen et al. 2024).",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 120)  # logs: wide enough for the tables

CONFIG_HELP = "YAML file with the same settings (configs/linreg/); flags override it"


@linreg_app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    out: Annotated[str | None, typer.Option("--out", help="run folder to write")] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="K: LSA layers")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="default 5000 (1 layer), 20000 deeper")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="fixes data, init and the eval set")] = None,
    d: Annotated[int | None, typer.Option("--d", help="input dimension (default 10)")] = None,
    m: Annotated[int | None, typer.Option("--m", help="output dimension (default 1)")] = None,
    n_context: Annotated[int | None, typer.Option("--n", "--n-context", help="context pairs N (default 10)")] = None,
    input_range: Annotated[float | None, typer.Option("--input-range", help="x ~ U(-r/2, r/2); default 1")] = None,
    weight_scale: Annotated[float | None, typer.Option("--weight-scale", help="W ~ N(0, s² I)")] = None,
    recurrent: Annotated[bool | None, typer.Option("--recurrent/--no-recurrent", help="one layer K times")] = None,
    causal_mask: Annotated[bool | None, typer.Option("--causal-mask/--no-causal-mask")] = None,
    positional_encoding: Annotated[bool | None, typer.Option("--positional-encoding/--no-positional-encoding")] = None,
    softmax: Annotated[bool | None, typer.Option("--softmax/--no-softmax")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="fresh tasks per step (default 2048)")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam lr (default 1e-3; 5e-4 above 3 layers)")] = None,
    grad_clip: Annotated[float | None, typer.Option("--grad-clip", help="clip the gradient norm (0: off)")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing linreg run in --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train an LSA on fresh regression tasks (Adam, 2048 tasks per step, the official recipe)."""
    from iclgd.synthetic.linreg.config import TrainConfig, load_config

    overrides = dict(out=out, layers=layers, steps=steps, seed=seed, d=d, m=m, n_context=n_context,
                     input_range=input_range, weight_scale=weight_scale, recurrent=recurrent, causal_mask=causal_mask,
                     positional_encoding=positional_encoding, softmax=softmax, batch_size=batch_size, lr=lr,
                     grad_clip=grad_clip, threads=threads)
    settings = load_config(TrainConfig, config, overrides)
    if settings.out is None:
        raise UserError("no output folder given: pass --out runs/lsa1 (or `out:` in the config)")
    from iclgd.synthetic.linreg.train import train as run_training

    result = run_training(settings, settings.out, overwrite=overwrite, progress=not quiet)
    if result.already_done:
        console.print(f"{result.out}: already done (the same config; pass --overwrite to train it again)")
        return
    console.print(f"trained {settings.layers}-layer LSA for {settings.steps} steps in {result.seconds:.1f} s "
                  f"({result.steps_per_second:.0f} steps/s): eval loss {result.eval_loss:.4f} -> {result.out}")


@linreg_app.command()
def compare(
    run: Annotated[str | None, typer.Option("--run", help="run folder written by `iclgd linreg train`")] = None,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    ood: Annotated[bool | None, typer.Option("--ood/--no-ood", help="also run the out-of-distribution sweeps")] = None,
    ood_tasks: Annotated[int | None, typer.Option("--ood-tasks", help="tasks per sweep point")] = None,
) -> None:
    """Trained LSA vs GD, GD++, the hand-built and the interpolated weights (losses, sensitivities, OOD)."""
    from iclgd.synthetic.linreg.config import CompareConfig, check_run_dir, load_config

    settings = load_config(CompareConfig, config, dict(run=run, ood=ood, ood_tasks=ood_tasks))
    run_dir = check_run_dir(settings.run)
    from iclgd.synthetic.linreg.compare import compare as run_compare
    from iclgd.synthetic.linreg.tables import compare_table, ood_table

    summary = run_compare(run_dir, settings)
    console.print(compare_table(summary))
    if "ood" in summary:
        console.print(ood_table(summary["ood"]))
    console.print(f"wrote {', '.join(summary['files'])} in {summary['run']}")


@linreg_app.command("ood")
def ood_command(
    run: Annotated[str | None, typer.Option("--run", help="run folder written by `iclgd linreg train`")] = None,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    ood_tasks: Annotated[int | None, typer.Option("--ood-tasks", help="tasks per sweep point")] = None,
) -> None:
    """Out-of-distribution sweeps only: input range α 0.5..2 (step 0.03), weight scale 0.5..5 (step 0.1)."""
    from iclgd.synthetic.linreg.config import CompareConfig, check_run_dir, load_config

    settings = load_config(CompareConfig, config, dict(run=run, ood_tasks=ood_tasks))
    run_dir = check_run_dir(settings.run)
    from iclgd.synthetic.linreg.compare import ood as run_ood
    from iclgd.synthetic.linreg.tables import ood_table

    console.print(ood_table(run_ood(run_dir, settings)))
    console.print(f"wrote ood.parquet, ood.png, ood.pdf in {run_dir}")


@linreg_app.command()
def critique(
    run: Annotated[str | None, typer.Option("--run", help="run folder written by `iclgd linreg train`")] = None,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    orderings: Annotated[int | None, typer.Option("--orderings", help="orderings per task (10)")] = None,
    variant_steps: Annotated[int | None, typer.Option("--variant-steps", help="steps per order variant")] = None,
    order_tasks: Annotated[int | None, typer.Option("--order-tasks", help="eval tasks for the order table")] = None,
    noise_tasks: Annotated[int | None, typer.Option("--noise-tasks", help="eval tasks for noise")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Shen et al.'s critiques: order sensitivity, sparsity, weight perturbation."""
    from iclgd.synthetic.linreg.config import CritiqueConfig, check_run_dir, load_config

    settings = load_config(CritiqueConfig, config, dict(run=run, orderings=orderings, variant_steps=variant_steps,
                                                        order_tasks=order_tasks, noise_tasks=noise_tasks))
    run_dir = check_run_dir(settings.run)
    from iclgd.synthetic.linreg.critique import critique as run_critique
    from iclgd.synthetic.linreg.tables import order_table, perturbation_table, sparsity_table

    result = run_critique(run_dir, settings, progress=not quiet)
    console.print(order_table(result["order"], settings.variant_steps))
    console.print(sparsity_table(result["sparsity"], result["required_sparsity"]))
    console.print(perturbation_table(result["perturbation"]))
    console.print(f"wrote order, sparsity and perturbation (.parquet, .png, .pdf) in {result['run']}")


def register(app: typer.Typer) -> None:
    app.add_typer(linreg_app, name="linreg")
