"""Printing reports to the terminal (rich): wide enough for the summary's many columns when piped."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from iclgd.progress import on_terminal
from iclgd.report.tables import side_by_side_table
from iclgd.runner.results import open_unit, read_record

# Where stdout is a file a table takes its natural width (a sweep's summary of 24 columns with intervals is ~1 100
# characters): a narrower console would cut every cell to "0.18…".
FILE_WIDTH = 4000


def console() -> Console:
    """A rich console; when stdout is not a terminal (files, CI logs; FORCE_COLOR only makes rich think it is one),
    COLUMNS wide where it is set, else wide enough that no table is cut or wrapped."""
    terminal = Console()
    return terminal if on_terminal(terminal) or os.environ.get("COLUMNS") else Console(width=FILE_WIDTH)


def print_unit_summary(unit_dir: str | Path, ft_method: str | None = None) -> None:
    """The summary table of one finished unit folder, one row per FT method it ran, and where it is."""
    con = open_unit(Path(unit_dir))
    methods = [m for (m,) in con.execute(
        "SELECT DISTINCT method FROM metrics WHERE metric = 'accuracy' AND method NOT IN ('zs', 'icl', 'majority') "
        "ORDER BY 1"
    ).fetchall()]
    out = console()
    out.print(side_by_side_table(con, by="unit", ft_methods=[ft_method] if ft_method else methods or ["gd"]))
    (last,) = con.execute("SELECT max(epoch) FROM metrics_by_epoch").fetchone()
    lr_line = learning_rate_line(read_record(Path(unit_dir)))
    if lr_line:
        out.print(lr_line, markup=False, highlight=False, soft_wrap=True)
    if last is not None and last > 1:
        out.print(f"FT methods at their last epoch ({last}); every recorded epoch: the metrics_by_epoch view "
                  "(iclgd sql), or iclgd report --paper shen2024")
    out.print(f"results: {unit_dir}")


def learning_rate_line(record: dict) -> str | None:
    """The FT learning rate(s) of a unit and where they came from (given, published, or the search's choice, with its
    ties), which the summary table does not show; None for a unit without FT."""
    lrs = {name: method["lr"] for name, method in (record.get("methods") or {}).items() if method.get("lr")}
    if not lrs:
        return None
    source = record.get("lr_source") or ""
    source = "given: --lr or the config" if source == "config" else source
    if len(set(lrs.values())) == 1:
        return f"learning rate {next(iter(lrs.values())):g} ({source})"
    own = "each method's own" if source == "per method" else f"unit's lr: {source}"
    return f"learning rates: {', '.join(f'{name} {lr:g}' for name, lr in lrs.items())} ({own})"


def curve_table(points, title: str = "", caption: str = ""):
    """A rich table of an ICL curve: one row per k, one column per variant (mean accuracy over seeds)."""
    from rich.table import Table

    from iclgd.experiments.icl_curve import true_k_text
    from iclgd.report.curves import mean_by_k

    means = mean_by_k(points)
    table = Table(title=title, caption=caption)
    table.add_column("k", justify="right")
    for variant in means:
        table.add_column(variant, justify="right")
    for k in sorted({p.k for p in points}):
        table.add_row(true_k_text(points, k), *(f"{means[v][k]:.3f}" for v in means))
    return table
