"""Reports: tables and plots from stored results.

    con = iclgd.runner.open_results("results")
    console.print(summary_table(con, over=("seed",)))
    console.print(paper_table(con, "deutch2024"))
    plot_per_layer(con, ["simaou", "simam_delta"], "figures/per_layer", by="variant")
    report_shen(con, console, "figures/shen2024")  # Shen et al.: Sen summary, Table 1, Figures 4 and 5
    report_deutch(con, console, "figures/deutch2024")  # Deutch et al.: the table, Figures 2-4
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): a command that prints tables but draws nothing (compare) does not import
# matplotlib (~0.7 s) through the paper reports and their plots.
_HOME = {
    "PAPERS": "published",
    "paper_lines": "tables",
    "paper_table": "tables",
    "plot_accuracy_bars": "plots",
    "plot_per_layer": "plots",
    "report_deutch": "deutch",
    "report_shen": "shen",
    "summary_rows": "tables",
    "summary_table": "tables",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"iclgd.report.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
