"""`iclgd report <out>` (summary or a paper's tables, optional plots) and `iclgd sql <out> "<query>"`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PLOTS = ("per-layer", "accuracy")
SHEN = "shen2024"  # tables and figures of its own (iclgd.report.shen), not a Paper of published.py
DEUTCH = "deutch2024"  # a Paper, and its figures 2-4 (iclgd.report.deutch)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


# Stored methods that are not FT methods: the two passes and the majority-label baseline (the others are FT
# methods, and "<a>_vs_<b>" comparisons of two)
PASSES = ("zs", "icl", "majority")


def check_method(con, method: str, out: Path) -> None:
    """The FT method asked for is in the results: else its columns would vanish from the table without a word."""
    from iclgd.errors import UserError
    from iclgd.runner import query

    _, rows = query(con, "SELECT DISTINCT method FROM metrics ORDER BY method")
    present = [m for (m,) in rows if m not in PASSES and "_vs_" not in m]
    if method not in present:
        raise UserError(f"no FT method {method!r} in the results in {out}: they hold {', '.join(present) or 'none'}; "
                        f"pass --method {present[0] if present else 'gd'}")


def check_complete(out: Path) -> None:
    """A sweep's results are reported whole: the units its sweeps planned and did not finish are named."""
    from iclgd.errors import UserError
    from iclgd.runner.sweep import missing_units, plans_listing

    missing, planned = missing_units(out)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        plans = ", ".join(str(p) for p in plans_listing(out, missing))
        raise UserError(f"incomplete sweep in {out}: {len(missing)} of its {planned} planned units are not finished "
                        f"({shown}); rerun the sweep that planned them (finished units are skipped), pass --partial "
                        f"to report the finished ones, or, if that sweep file changed and no longer makes them, "
                        f"delete its plan ({plans})")


def check_where(con, where: str) -> None:
    """``--where`` filters the metrics view: a column it does not have (a config field such as lr) is named with
    the ones it has, and where config fields are."""
    from iclgd.errors import UserError
    from iclgd.runner.results import query

    try:
        query(con, f"SELECT 1 FROM metrics WHERE ({where}) LIMIT 0")
    except UserError as err:
        columns = [row[0] for row in con.execute("DESCRIBE metrics").fetchall()]
        raise UserError(f"--where {where!r} is not a filter on the metrics columns ({err}); they are "
                        f"{', '.join(columns)}; config fields such as lr are in the units view: iclgd sql OUT "
                        "\"SELECT unit FROM units WHERE json_extract(record, '$.config.lr') = 0.05\"") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        out: Annotated[Path, typer.Argument(help="results folder of a sweep")],
        paper: Annotated[str | None, typer.Option(help="print a paper's tables beside its numbers: dai2023 | "
                                                       "deutch2024 (also draws its figures 2-4 into "
                                                       "<out>/_plots/deutch2024_*) | shen2024 (figures 4 and 5 "
                                                       "into <out>/_plots/shen2024_*)")] = None,
        method: Annotated[str, typer.Option(help="FT method compared with ICL (gd, lcgd)")] = "gd",
        over: Annotated[str, typer.Option(help="average over these columns, e.g. seed or seed,order (mean ± std); "
                                                "--paper tables always show mean ± std over each task's units "
                                                "(a line per k and setting)")] = "",
        where: Annotated[str | None, typer.Option(help="SQL filter on metrics, e.g. \"k = 32\"")] = None,
        plot: Annotated[str | None, typer.Option(help="also draw: per-layer | accuracy")] = None,
        metrics: Annotated[str, typer.Option(help="metrics of the per-layer plot")] = "simaou,simam_delta",
        by: Annotated[str, typer.Option(help="one curve (per-layer) or bar group (accuracy) per value")] = "",
        plot_out: Annotated[Path | None, typer.Option(help="plot file stem (default <out>/_plots/<plot>; for "
                                                                  "deutch2024 and shen2024 the prefix of its "
                                                                  "figures)")] = None,
        partial: Annotated[bool, typer.Option("--partial", help="report the finished units of a sweep that has "
                                                                 "not finished")] = False,
    ) -> None:
        """Print the summary table (or a paper's tables) of a results folder; optionally draw plots."""
        from iclgd.checks import check_output_file
        from iclgd.errors import UserError
        from iclgd.report import PAPERS, paper_table, plot_accuracy_bars, plot_per_layer, summary_table
        from iclgd.report.console import console
        from iclgd.runner import open_results

        if plot is not None and plot not in PLOTS:
            raise UserError(f"unknown plot {plot!r}: choose one of {', '.join(PLOTS)}")
        if paper and paper not in (*PAPERS, SHEN):
            raise UserError(f"unknown paper {paper!r}: choose one of {', '.join((*PAPERS, SHEN))}")
        con = open_results(out)
        if not partial:
            check_complete(out)
        if where is not None:
            check_where(con, where)
        if not paper or plot:
            check_method(con, method, out)
        stem = (plot_out or out / "_plots" / plot.replace("-", "_")) if plot else None
        if stem is not None:  # before the table: a plot that cannot be written fails first
            check_output_file(stem, flag="--plot-out")
        terminal = console()
        paper_paths = []
        if paper == SHEN:
            from iclgd.report.shen import report_shen

            paper_paths = report_shen(con, terminal, plot_out or out / "_plots" / SHEN, where=where, source=out)
        elif paper == DEUTCH:
            from iclgd.report.deutch import report_deutch

            paper_paths = report_deutch(con, terminal, plot_out or out / "_plots" / DEUTCH, where=where)
        elif paper:
            terminal.print(paper_table(con, paper, where=where))
        else:
            terminal.print(summary_table(con, ft_method=method, over=_names(over), where=where))
        if paper in (None, DEUTCH):
            from iclgd.report.paired import report_variant_tests

            paper_paths += report_variant_tests(con, terminal, out, where=where)
        if plot == "per-layer":
            paths = plot_per_layer(con, _names(metrics), stem, by=by or "variant", method=method, where=where)
        elif plot == "accuracy":
            paths = plot_accuracy_bars(con, stem, by=by or "task", methods=("zs", "icl", method), where=where)
        else:
            paths = []
        for path in paper_paths + paths:
            terminal.print(f"wrote {path}")

    @app.command()
    def sql(
        out: Annotated[Path, typer.Argument(help="results folder of a sweep")],
        query_text: Annotated[str, typer.Argument(metavar="QUERY", help="DuckDB SQL over the views metrics, "
                                                                         "predictions, example_scores, units")],
        limit: Annotated[int, typer.Option(help="rows printed at most")] = 200,
    ) -> None:
        """Run a DuckDB query over a results folder and print the result as a table."""
        import duckdb
        from rich.table import Table

        from iclgd.errors import UserError
        from iclgd.report.console import console
        from iclgd.runner import open_results, query

        con = open_results(out)
        try:
            statements = len(duckdb.extract_statements(query_text))
        except duckdb.Error:  # a syntax error: the query itself says where
            statements = 1
        if statements > 1:  # DuckDB would run them all and return the last one's rows alone
            raise UserError(f"the query holds {statements} statements: run one at a time")
        columns, rows = query(con, query_text)
        table = Table()
        for column in columns:
            table.add_column(column)
        for row in rows[:limit]:
            table.add_row(*("NULL" if value is None else str(value) for value in row))
        terminal = console()
        terminal.print(table)
        terminal.print(f"{len(rows)} rows" + (f", first {limit} shown (--limit)" if len(rows) > limit else ""))

    @app.command()
    def reproduce(
        paper: Annotated[str, typer.Argument(help="dai2023 | deutch2024 | shen2024 | vonoswald2023")],
        out: Annotated[Path, typer.Option(help="results folder: the units (or linreg runs), report.md and "
                                               "report.html")],
        model: Annotated[str | None, typer.Option(help="hub id, folder, .gguf file or named model (iclgd models); "
                                                       "not for vonoswald2023, which trains its own")] = None,
        tasks: Annotated[str, typer.Option(help="comma-separated tasks (default: the paper's; with --quick, "
                                                "offline real tasks)")] = "",
        quick: Annotated[bool, typer.Option("--quick/--full", help="size the run for 2 CPU cores: fewer and smaller "
                                                                    "units (README: One command per paper lists "
                                                                    "each paper's)")] = False,
        device: Annotated[str | None, typer.Option(help="cpu | cuda (default: the protocol's)")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    ) -> None:
        """Run a paper's protocol on a model as a resumable sweep, then write DIR/report.md and DIR/report.html."""
        import shlex
        import sys

        from iclgd.experiments.reproduce import run_reproduce
        from iclgd.report.console import console
        from iclgd.report.reproduce import build_report

        info = run_reproduce(paper, model, out, tasks=_names(tasks) or None, quick=quick,
                             overrides={"device": device} if device else None, progress=progress)
        command = " ".join(shlex.quote(a) for a in ["iclgd", *sys.argv[1:]])
        md, page = build_report(out, info, command)
        done = (f"{len(info.runs)} linreg runs in {out} ({len(info.trained)} trained now)" if paper == "vonoswald2023"
                else f"{len(info.configs)} units in {out} ({len(info.ran)} run now)")
        console().print(f"{done}; report: {md}, {page}")
