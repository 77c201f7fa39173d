"""`iclgd compare` and `iclgd demo`: parse flags into a CompareConfig and call the experiment."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer


def _template(value: str | None) -> int | str | None:
    """An index (a whole number, negative ones included, which the task then refuses as out of range) or a
    template string of one's own."""
    if value is None:
        return None
    return int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else value


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        config: Annotated[Path | None, typer.Option("--config", help="YAML file with any of the fields below")] = None,
        model: Annotated[str | None, typer.Option(
            help="hub id, local folder, .gguf file or named model (iclgd models) of a causal LM")] = None,
        task: Annotated[str | None, typer.Option(help="built-in task name or task file")] = None,
        shots: Annotated[int | None, typer.Option("--shots", "-k", help="demonstrations (k)")] = None,
        seed: Annotated[int | None, typer.Option(help="demo seed; seeds every random choice")] = None,
        order: Annotated[int | None, typer.Option(help="demo order (0: sampled order)")] = None,
        template: Annotated[str | None, typer.Option(help="template index or template string")] = None,
        eval_size: Annotated[int | None, typer.Option(help="eval rows")] = None,
        position: Annotated[str | None, typer.Option(help="analysis position: label_token | prompt_end")] = None,
        method: Annotated[list[str] | None, typer.Option("--method", help=(
            "FT method (repeat): gd, lcgd, lcgd-paper or <kv|whole|wv:layer>-<gd|sgd[b]|adam[b]>[-demo|label][@lr], "
            "e.g. whole-adam-label@1e-4"))] = None,
        epochs: Annotated[int | None, typer.Option(help="epochs every FT method runs")] = None,
        record_epoch: Annotated[list[int] | None, typer.Option("--record-epoch", help=(
            "epoch at which the methods are measured (repeat; default 1, 2, 5, 10, ... up to --epochs)"))] = None,
        output_metrics: Annotated[bool | None, typer.Option("--output-metrics/--no-output-metrics", help=(
            "TO@10, OCS@10, KL, JS of ICL vs each method, with the ICL-vs-ICL noise floor (KL and JS in "
            "metrics.parquet only)"))] = None,
        orderings: Annotated[int | None, typer.Option(help="orderings of the demos (2+: order sensitivity)")] = None,
        ft_shots: Annotated[int | None, typer.Option(help="demos FT trains on (default: ICL's)")] = None,
        lr: Annotated[float | None, typer.Option(help="learning rate (default: published or searched)")] = None,
        lr_search: Annotated[str | None, typer.Option(
            help="lr search without --lr: grid (the choice of Dai's 36 points, found best first) | halving (8 "
                 "points, successive halving; cheaper, may pick a worse lr)")] = None,
        lr_search_rows: Annotated[int | None, typer.Option(
            help="held-out training rows (disjoint from the demos) that score the lr search (default 200)")] = None,
        untrained: Annotated[
            str | None, typer.Option(help="untrained variant: all | keep_layernorm | trained_embeddings, or "
                                          "with _fairseq (fairseq's init, as Deutch et al.'s), e.g. all_fairseq")
        ] = None,
        dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16")] = None,
        device: Annotated[str | None, typer.Option(help="cpu | cuda")] = None,
        batch_size: Annotated[int | None, typer.Option(help="eval batch size")] = None,
        max_context: Annotated[int | None, typer.Option(help="context length (default: the model's)")] = None,
        separator: Annotated[str | None, typer.Option(help="separator text between demos (\\n is a newline, "
                                                           "\\t a tab, \\\\ a backslash)")] = None,
        bos: Annotated[str | None, typer.Option(help="BOS text, or none")] = None,
        data_dir: Annotated[str | None, typer.Option(help="folder of prepare-data snapshots")] = None,
        kendall_examples: Annotated[int | None, typer.Option(help="eval examples for Kendall")] = None,
        balanced: Annotated[bool | None, typer.Option("--balanced/--no-balanced", help="balanced demos")] = None,
        captures: Annotated[
            str | None, typer.Option(help="captures kept per example: compact | full | none")
        ] = None,
        out: Annotated[str | None, typer.Option(help="results folder")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
    ) -> None:
        """Compare ICL and GD finetuning inside a causal LM on one task (one unit)."""
        from iclgd.experiments.run import run_and_store
        from iclgd.report.console import print_unit_summary

        overrides = dict(
            model=model, task=task, shots=shots, seed=seed, order=order, template=_template(template),
            eval_size=eval_size, position=position, methods=method or None, epochs=epochs,
            record_epochs=record_epoch or None, output_metrics=output_metrics, orderings=orderings,
            ft_shots=ft_shots, lr=lr, lr_search=lr_search, lr_search_rows=lr_search_rows,
            untrained=untrained,
            dtype=dtype, device=device, batch_size=batch_size, max_context=max_context, separator=unescape(separator),
            bos=bos, data_dir=data_dir, kendall_examples=kendall_examples, balanced=balanced,
            captures=captures, out=out,
        )
        from iclgd.experiments.config import load_config  # here, not at the top: `iclgd --help` needs no torch

        cfg = load_config(config, overrides)
        unit_dir = run_and_store(cfg, show_progress=progress)
        print_unit_summary(unit_dir)

    @app.command()
    def demo(
        model: Annotated[str, typer.Option(help="smollm2-135m (a real LM, fetched once) | icc-gpt2 | "
                                                "icc-exemplars-gpt2 (iclgd's own)")] = "smollm2-135m",
        out: Annotated[str, typer.Option(help="results folder (the demo writes <out>/<model>/)")] = "results/demo",
        eval_size: Annotated[int | None, typer.Option(help="eval rows per unit (default: the preset's)")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    ) -> None:
        """End to end, offline: a real LM vs its untrained variants (ZS, ICL, GD, LCGD), tables and plot."""
        from iclgd.experiments.demo import run_demo

        run_demo(out, model=model, eval_size=eval_size, progress=progress)

    register_sweep(app)


def register_sweep(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        file: Annotated[Path, typer.Argument(help="sweep YAML: base fields, runs and/or grid")],
        out: Annotated[str | None, typer.Option(help="results folder (overrides the file's)")] = None,
        backend: Annotated[str | None, typer.Option(help="local | ray | slurm")] = None,
    ) -> None:
        """Run a grid of compare units; finished units are skipped (rerun to resume)."""
        from iclgd.experiments.sweep import run_sweep_file
        from iclgd.report.console import console
        from iclgd.report.tables import summary_table
        from iclgd.runner.results import open_results

        report, configs = run_sweep_file(file, out=out, backend=backend)
        con = open_results(Path(configs[0].out))
        ran = Counter(method for cfg in configs for method in cfg.methods)  # the FT method the units ran most
        console().print(summary_table(con, ft_method=ran.most_common(1)[0][0] if ran else "gd"))
        others = f", {len(report.by_others)} run by another sweep on this folder" if report.by_others else ""
        console().print(f"{len(report.ran)} ran, {len(report.skipped)} already done{others}; results: {configs[0].out}")


def unescape(text: str | None) -> str | None:
    """A shell passes '\\n' as a backslash and an n: on the command line \\n, \\t and \\\\ mean what they do in
    YAML's double quotes (where a task file writes its separator)."""
    if text is None:
        return None
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)
