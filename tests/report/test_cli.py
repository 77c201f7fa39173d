import typer
from typer.testing import CliRunner

from iclgd.cli import report as report_cli
from iclgd.errors import UserError
from iclgd.report.console import print_unit_summary
from iclgd.runner import open_results


def _app() -> typer.Typer:
    app = typer.Typer()
    report_cli.register(app)
    return app


def invoke(*args: str):
    return CliRunner().invoke(_app(), [str(a) for a in args], env={"COLUMNS": "300"})


def test_report_summary_over_seeds(results_dir):
    result = invoke("report", results_dir, "--over", "seed", "--where", "variant = 'trained'")
    assert result.exit_code == 0, result.output
    assert "iclgd summary" in result.output and "0.400 ± 0.200" in result.output


def test_report_paper_and_plot(results_dir):
    result = invoke("report", results_dir, "--paper", "deutch2024", "--plot", "per-layer", "--metrics",
                    "simaou,simam_delta")
    assert result.exit_code == 0, result.output
    assert "Deutch et al. 2024" in result.output and "published" in result.output
    assert (results_dir / "_plots" / "per_layer.png").stat().st_size > 0
    assert (results_dir / "_plots" / "per_layer.pdf").stat().st_size > 0
    open_results(results_dir)  # the plot folder is not mistaken for a unit


def test_report_bad_plot_is_a_user_error(results_dir):
    result = invoke("report", results_dir, "--plot", "violin")
    assert isinstance(result.exception, UserError) and "per-layer, accuracy" in str(result.exception)


def test_sql_prints_a_table(results_dir):
    result = invoke("sql", results_dir, "SELECT task, count(DISTINCT unit) AS units FROM metrics GROUP BY task "
                    "ORDER BY task", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "units" in result.output and "cb" in result.output and "sst2" in result.output
    assert "toy" not in result.output and "first 2 shown" in result.output


def test_print_unit_summary(results_dir, capsys):
    print_unit_summary(results_dir / "sst2-s2-trained")
    out = capsys.readouterr().out
    assert "FT = gd," in out and "sst2-s2-trained" in out
    header = next(line for line in out.splitlines() if "metric" in line)
    assert "gd" in header and "lcgd" in header
    simaou_norm = next(line for line in out.splitlines() if "SimAOU_norm " in line)
    assert "0.220" in simaou_norm  # 0.2 + 0.01 * seed 2, under gd
    assert "last epoch" not in out  # these units record no epochs


def test_the_unit_summary_says_the_learning_rate_and_where_it_came_from():
    from iclgd.report.console import learning_rate_line

    methods = {"gd": {"lr": 0.003}, "lcgd": {"lr": 0.003}}
    assert learning_rate_line({"methods": methods, "lr_source": "config"}) == (
        "learning rate 0.003 (given: --lr or the config)")
    searched = "search on Dai's grid; tied with 32 other lrs (0.0002 to 0.6) at its score, the smallest by the tie rule"
    assert learning_rate_line({"methods": methods, "lr_source": searched}) == f"learning rate 0.003 ({searched})"
    own = {"gd": {"lr": 0.003}, "whole-gd-label@0.5": {"lr": 0.5}}
    assert learning_rate_line({"methods": own, "lr_source": "config"}) == (
        "learning rates: gd 0.003, whole-gd-label@0.5 0.5 (unit's lr: given: --lr or the config)")
    assert learning_rate_line({"methods": own, "lr_source": "per method"}) == (
        "learning rates: gd 0.003, whole-gd-label@0.5 0.5 (each method's own)")
    assert learning_rate_line({"methods": {}}) is None and learning_rate_line({}) is None


def test_print_unit_summary_names_the_epoch_it_shows(tmp_path, capsys):
    from iclgd.runner import UnitResult, metric_row, write_unit

    keys = dict(model="m", variant="trained", task="t", template=0, seed=1, order=0, k=4, true_k=4)
    rows = [metric_row("accuracy", 0.5, 10, method="zs", **keys), metric_row("accuracy", 0.8, 10, method="icl", **keys)]
    rows += [metric_row("accuracy", value, 10, method="whole-gd-label", epoch=epoch, **keys)
             for epoch, value in ((1, 0.55), (3, 0.75))]
    write_unit(tmp_path, "u", {"seed": 1}, UnitResult(metrics=rows, predictions=[]))
    print_unit_summary(tmp_path / "u")
    out = capsys.readouterr().out
    assert "FT methods at their last epoch (3)" in out and "75.0" in out and "55.0" not in out


def test_side_by_side_variants_sst2_seed1(con):
    from rich.console import Console

    from iclgd.report.tables import side_by_side_table

    shell = Console(width=200, record=True)
    shell.print(side_by_side_table(con, by="variant", where="task = 'sst2' AND seed = 1"))
    out = shell.export_text()
    header = next(line for line in out.splitlines() if "metric" in line)
    assert header.index("trained ") < header.index("untrained:all")  # the trained model comes first
    simaou = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("SimAOU "))
    assert "0.050" in simaou and "0.070" in simaou and "0.200" in simaou  # untrained all / emb, trained 1*0.2


def test_report_partial_reports_the_finished_units_of_an_unfinished_sweep(tmp_path):
    from iclgd.runner import run_sweep
    from tests.runner.helpers import run_fake

    try:
        run_sweep([{"task": "sst2", "k": 4, "seed": 1}, {"task": "sst2", "k": 4, "seed": 2, "fail": True}], run_fake,
                  tmp_path, progress=False)
    except ValueError:
        pass
    refused = invoke("report", tmp_path)
    assert isinstance(refused.exception, UserError) and "--partial" in str(refused.exception)
    result = invoke("report", tmp_path, "--partial")
    assert result.exit_code == 0, result.output
    assert "iclgd summary" in result.output


def test_a_sweeps_summary_shows_the_ft_method_its_units_ran(tmp_path, monkeypatch, capsys):
    """A sweep of lcgd units: the summary printed at its end is lcgd's, not an empty gd table."""
    import sys
    from pathlib import Path

    from iclgd.cli import main

    model = Path(__file__).resolve().parents[2] / "src" / "iclgd" / "assets" / "icc-gpt2"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {{model: {model}, task: icc-heldout, eval_size: 8, shots: 4, lr: 0.01, "
                     f"methods: [lcgd], kendall_examples: 0}}\nout: {tmp_path / 'out'}\n")
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(sys, "argv", ["iclgd", "sweep", str(sweep)])
    main()
    out = capsys.readouterr().out
    assert "FT = lcgd" in out and "SimAOU" in out
