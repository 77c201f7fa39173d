"""`iclgd pretrain` and `iclgd icl-curve`: parse flags and call iclgd.synthetic.pretrain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def emergence(
        run: Annotated[Path, typer.Option(help="pretrain run folder with kept checkpoints (iclgd pretrain "
                                               "--keep-every N), or a folder of model folders named by step")],
        out: Annotated[Path, typer.Option(help="results folder: one unit per checkpoint and variant, "
                                               "emergence.png/pdf")],
        task: Annotated[str | None, typer.Option(help="task of the compare units (default: the held-out task "
                                                       "of the run's corpus)")] = None,
        shots: Annotated[int, typer.Option(min=1, help="demonstrations k (icc-heldout: ICL is full at 16)")] = 16,
        seed: Annotated[int, typer.Option(min=0, help="demonstration seed")] = 1,
        eval_size: Annotated[int | None, typer.Option(min=1, help="eval rows (default: the task's; "
                                                              "icc-exemplars-heldout: 216)")] = None,
        untrained: Annotated[list[str] | None, typer.Option(help="untrained variant (repeat; default all)")] = None,
        lr: Annotated[float | None, typer.Option(help="fixed lr (default: the halving search per checkpoint)")] = None,
        orderings: Annotated[int | None, typer.Option(min=1, help="demo orderings per unit (default 1: the output "
                                                                  "metrics' noise floor adds one ending with another "
                                                                  "demo; 2+: order sensitivity too)")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    ) -> None:
        """ICL-vs-GD similarity at every kept pretraining checkpoint, beside the untrained baselines: one compare
        unit per checkpoint, then accuracy and every score against training step."""
        from iclgd.experiments.emergence import run_emergence
        from iclgd.experiments.momentum import ONSET
        from iclgd.report.console import console as wide_console
        from iclgd.report.emergence import emergence_table, emergence_values, plot_emergence
        from iclgd.runner import open_results
        from iclgd.synthetic.pretrain.train import circuit_log, onset_step

        fields = {"shots": shots, "seed": seed, **({"eval_size": eval_size} if eval_size is not None else {}),
                  **({"lr": lr} if lr is not None else {}), **({"orderings": orderings} if orderings else {})}
        run_emergence(run, task, out, untrained=tuple(untrained or ("all",)), fields=fields, progress=progress)
        values = emergence_values(open_results(out))
        terminal = wide_console()
        terminal.print(emergence_table(values))
        for path in plot_emergence(values, out / "_plots" / "emergence", onset=onset_step(run, ONSET),
                                   circuit=circuit_log(run)):
            terminal.print(f"wrote {path}")

    @app.command()
    def momentum(
        out: Annotated[Path, typer.Option(help="folder for the runs (runs/<variant>-s<seed>), momentum.parquet, "
                                               "momentum.png/pdf")],
        corpus: Annotated[str, typer.Option(help="pretraining corpus (its recipe): icc | icc-exemplars")] = "icc",
        task: Annotated[str | None, typer.Option(help="held-out task of the ICL accuracy (default: the "
                                                       "corpus's)")] = None,
        seeds: Annotated[int, typer.Option(min=1, help="pretraining seeds 0..seeds-1")] = 3,
        steps: Annotated[int | None, typer.Option(help="pretraining steps of every run (default: recipe)")] = None,
        momentum: Annotated[list[str] | None, typer.Option(
            "--momentum", help="a momentum variant (repeat): η, fixed (0.9), or learned:η (one learned decay per "
                               "channel, starting at η); default 0.9")] = None,
        length: Annotated[list[int] | None, typer.Option(
            "--length", help="context length of the perplexity (repeat; default 16, 32, 64)")] = None,
        k: Annotated[list[int] | None, typer.Option(
            "--k", help="demonstrations of the ICL accuracy (repeat; default 0, 1, 2, 4, 8, 16)")] = None,
        demo_seeds: Annotated[int, typer.Option(min=1, help="demo seeds per k")] = 5,
        eval_size: Annotated[int | None, typer.Option(min=1, help="eval rows of the held-out task (default: all "
                                                              "its rows)")] = None,
        sequences: Annotated[int, typer.Option(min=1, help="held-out sequences per context length")] = 512,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
    ) -> None:
        """Vanilla vs momentum attention (Dai et al. §5): pretrain both per seed, same budget; compare perplexity
        and ICL accuracy."""
        from iclgd.experiments.icl_curve import DEFAULT_KS
        from iclgd.experiments.momentum import LENGTHS, RESULTS_FILE, Variant, compare_momentum, parse_variant
        from iclgd.report.console import console as wide_console
        from iclgd.report.momentum import momentum_table, plot_momentum

        variants = (Variant("vanilla"), *(parse_variant(text) for text in momentum or ["0.9"]))
        rows = compare_momentum(out, corpus=corpus, seeds=range(seeds), steps=steps, variants=variants, task=task,
                                lengths=length or LENGTHS, ks=k or DEFAULT_KS, demo_seeds=demo_seeds,
                                eval_size=eval_size, n_sequences=sequences, progress=progress)
        terminal = wide_console()
        terminal.print(momentum_table(rows))
        for path in [out / RESULTS_FILE, *plot_momentum(rows, out / "momentum")]:
            terminal.print(f"wrote {path}")

    @app.command()
    def pretrain(
        corpus: Annotated[str | None, typer.Option(help="icc | icc-exemplars | ginc | markov")] = None,
        out: Annotated[Path | None, typer.Option(help="run folder (default models/<corpus>); rerun to resume")] = None,
        config: Annotated[
            Path | None, typer.Option("--config", help="YAML of PretrainConfig fields (default: the corpus recipe)")
        ] = None,
        steps: Annotated[int | None, typer.Option(help="optimizer steps")] = None,
        seed: Annotated[int | None, typer.Option(help="fixes the initialisation and the data")] = None,
        device: Annotated[str | None, typer.Option(help="cpu (default) | cuda")] = None,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
        keep_every: Annotated[
            int | None, typer.Option(help="keep a loadable model folder every N steps (checkpoints/step-NNNNNN)")
        ] = None,
        attention: Annotated[str | None, typer.Option(help="vanilla (GPT-2) | momentum (Dai et al. §5)")] = None,
        momentum_eta: Annotated[float | None, typer.Option(help="momentum attention's η (default 0.9)")] = None,
        momentum_learned: Annotated[bool | None, typer.Option(
            "--momentum-learned/--momentum-fixed", help="one learned decay per channel, or η fixed")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    ) -> None:
        """Pretrain a small GPT-2 on a synthetic corpus where in-context learning emerges (resumable)."""
        from iclgd.report.console import console as wide_console
        from iclgd.synthetic.pretrain.config import load_config
        from iclgd.synthetic.pretrain.train import pretrain as run_pretrain

        cfg = load_config(config, corpus=corpus, steps=steps, seed=seed, device=device, threads=threads,
                          keep_every=keep_every, attention=attention, momentum_eta=momentum_eta,
                          momentum_learned=momentum_learned)
        if cfg.attention != "momentum" and (momentum_eta is not None or momentum_learned is not None):
            from iclgd.errors import UserError

            raise UserError("--momentum-eta and --momentum-learned set momentum attention: add --attention momentum")
        target = out if out is not None else Path("models") / cfg.corpus
        result = run_pretrain(cfg, target, progress=progress)
        console = wide_console()
        if result.steps == 0 and not result.saved:
            console.print(f"{target}: already complete ({cfg.steps} steps)")
        elif result.steps == 0:
            console.print(f"{target}: trained already; the final save, interrupted before, is now complete")
        else:
            console.print(f"{target}: {result.steps} steps in {result.seconds:.0f} s "
                          f"({result.steps_per_second:.1f} steps/s), final loss {result.final_loss:.4f}")

    @app.command("icl-curve")
    def icl_curve_command(
        model: Annotated[str, typer.Option(help="hub id, folder, .gguf file or named model (e.g. icc-gpt2)")],
        task: Annotated[str, typer.Option(help="built-in task name or task file")],
        k: Annotated[list[int] | None, typer.Option("--k", help="demonstration counts (repeat; 0 = zero-shot)")] = None,
        seeds: Annotated[int, typer.Option(min=1, help="demo seeds 0..seeds-1")] = 3,
        untrained: Annotated[
            list[str] | None, typer.Option(help="untrained variant (repeat): all | keep_layernorm | "
                                            "trained_embeddings (+ _fairseq)")
        ] = None,
        eval_size: Annotated[int, typer.Option(min=1, help="eval rows")] = 200,
        out: Annotated[Path | None, typer.Option(help="output folder (default results/icl-curve/<model>/<task>)")
                       ] = None,
        device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    ) -> None:
        """ICL accuracy vs k, trained and untrained: a table, curve.parquet and a plot (PNG + PDF)."""
        from iclgd.experiments.icl_curve import DEFAULT_KS, run_icl_curve
        from iclgd.report.console import console, curve_table
        from iclgd.tasks import task_name

        # one folder per model: two models' curves on one task do not overwrite each other
        target = out if out is not None else Path("results/icl-curve") / Path(model).name / task_name(task)
        ks = tuple(k) if k else DEFAULT_KS
        points, paths = run_icl_curve(model, task, target, ks=ks, seeds=tuple(range(seeds)),
                                      untrained=tuple(untrained or ()), eval_size=eval_size, device=device,
                                      show_progress=progress)
        out_console = console()
        out_console.print(curve_table(points, title=f"ICL accuracy on {task_name(task)}",
                                      caption=f"{model}; mean over {seeds} demo seed(s)"))
        out_console.print("wrote " + ", ".join(str(p) for p in paths))
