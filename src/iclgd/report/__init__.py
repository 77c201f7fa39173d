"""Reports: tables and plots from stored results.

    con = iclgd.runner.open_results("results")
    console.print(summary_table(con, over=("seed",)))
    console.print(paper_table(con, "deutch2024"))
    plot_per_layer(con, ["simaou", "simam_delta"], "figures/per_layer", by="variant")
    report_shen(con, console, "figures/shen2024")  # Shen et al.: Sen summary, Table 1, Figures 4 and 5
    report_deutch(con, console, "figures/deutch2024")  # Deutch et al.: the table, Figures 2-4
"""

from iclgd.report.deutch import report_deutch
from iclgd.report.plots import plot_accuracy_bars, plot_per_layer
from iclgd.report.published import PAPERS
from iclgd.report.shen import report_shen
from iclgd.report.tables import paper_lines, paper_table, summary_rows, summary_table

__all__ = [
    "PAPERS",
    "paper_lines",
    "paper_table",
    "plot_accuracy_bars",
    "plot_per_layer",
    "report_deutch",
    "report_shen",
    "summary_rows",
    "summary_table",
]
