"""`iclgd emergence` on a toy pretraining run with kept checkpoints: one unit per checkpoint and variant, the
untrained units on their checkpoint's lr, accuracy and every score against step (table, figure)."""

import pytest

from iclgd.errors import UserError
from iclgd.experiments.emergence import emergence_configs, run_emergence
from iclgd.experiments.weights import step_number
from iclgd.report.emergence import emergence_table, emergence_values, plot_emergence
from iclgd.runner import open_results
from iclgd.synthetic.pretrain.config import load_config
from iclgd.synthetic.pretrain.train import circuit_log, onset_step, pretrain

TOY = dict(steps=12, batch_size=4, n_embd=16, n_head=2, n_layer=2, n_positions=32, checkpoint_every=6, log_every=6,
           warmup_steps=2, keep_every=6)
FIELDS = {"shots": 4, "eval_size": 6, "lr": 1e-2, "kendall_examples": 3, "batch_size": 8}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emergence") / "run"
    pretrain(load_config(None, **TOY), folder, progress=False)
    return folder


def test_units_per_checkpoint_and_the_untrained_lr(run, tmp_path):
    trained, variants, steps = emergence_configs(run, "icc-heldout", tmp_path, fields={"lr_search_rows": 20})
    assert sorted(steps.values()) == [0, 6, 12] and len(trained) == len(variants) == 3
    assert {c.lr for c in trained + variants} == {None}  # searched per checkpoint, then reused
    lrs = {cfg.unit_id(): 0.01 * (i + 1) for i, cfg in enumerate(trained)}
    _, variants, _ = emergence_configs(run, "icc-heldout", tmp_path, fields={"lr_search_rows": 20}, lrs=lrs)
    assert [(v.model, v.untrained, v.lr) for v in variants] == [(t.model, "all", lrs[t.unit_id()]) for t in trained]


def test_the_default_noise_floor_ends_with_another_demo(run, tmp_path, capsys, monkeypatch):
    """Two orderings of the default sample (k = 16, seed 1) end with the same demo, a floor of near-identical
    readings; the default is one ordering, and the floor's own second one ends with another demo."""
    from iclgd import errors
    from iclgd.experiments import compare

    monkeypatch.setattr(errors, "_SAID", set())  # said once per process
    trained, _, _ = emergence_configs(run, "icc-heldout", tmp_path, fields={"lr_search_rows": 20})
    orders = compare.demo_orders(trained[0], 16)
    assert trained[0].orderings == 1 and len(orders) == 2 and orders[0][-1] != orders[1][-1]
    assert "end with the same demo" not in capsys.readouterr().err
    two = compare.demo_orders(trained[0].model_copy(update={"orderings": 2}), 16)
    assert two[0][-1] == two[1][-1]  # what the old default measured, and said so
    assert "end with the same demo" in capsys.readouterr().err


def test_emergence_measures_every_checkpoint_beside_its_untrained_variant(run, tmp_path):
    configs, steps = run_emergence(run, "icc-heldout", tmp_path / "out", fields=FIELDS, progress=False)
    assert len(configs) == 6
    values = emergence_values(open_results(tmp_path / "out"))
    for key in (("trained", "icl", "accuracy"), ("trained", "gd", "simaou_norm"), ("untrained:all", "gd", "simaou"),
                ("trained", "lcgd_vs_gd", "alpha"), ("trained", "gd", "to@10"), ("trained", "icl_vs_icl", "to@10")):
        assert sorted(values[key]) == [0, 6, 12], key
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(emergence_table(values))
    text = console.export_text()
    assert "ICL acc" in text and "SimAOU_norm" in text and "TO@10" in text and text.count("\n│") >= 3
    paths = plot_emergence(values, tmp_path / "fig", onset=6)
    assert all(p.stat().st_size > 0 for p in paths)
    circuit = circuit_log(run)  # the run's logged progress measures, one more panel
    assert sorted(circuit) == ["induction_score", "induction_share", "label_attention", "previous_token_score"]
    assert all(sorted(logged) == [6, 12] and all(0 <= v <= 1 + 1e-6 for v in logged.values())
               for logged in circuit.values())
    assert circuit_log(run / "checkpoints") == circuit and circuit_log(tmp_path) == {}
    assert onset_step(run / "checkpoints", 0.0) == onset_step(run, 0.0) == 6
    with_circuit = plot_emergence(values, tmp_path / "fig-circuit", onset=6, circuit=circuit)
    assert all(p.stat().st_size > 0 for p in with_circuit)
    again, _ = run_emergence(run, "icc-heldout", tmp_path / "out", fields=FIELDS, progress=False)  # resumes: no work
    assert [c.unit_id() for c in again] == [c.unit_id() for c in configs]
    units = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(UserError, match=r"holds emergence units of another setting \(shots 4 there, 2 now\)"):
        run_emergence(run, "icc-heldout", tmp_path / "out", fields={**FIELDS, "shots": 2}, untrained=(),
                      progress=False)  # refused before any unit: the folder stays readable
    with pytest.raises(UserError, match=r"another setting \(lr 0.01 there, None now\)"):  # not the search's rows
        run_emergence(run, "icc-heldout", tmp_path / "out", fields={**FIELDS, "lr": None, "lr_search_rows": 20},
                      untrained=(), progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == units
    assert emergence_values(open_results(tmp_path / "out")).keys() == values.keys()


def test_step_names_and_bad_runs(tmp_path):
    assert step_number("/x/checkpoints/step-002000") == 2000
    with pytest.raises(UserError, match="no step number"):
        step_number("/x/final")
    with pytest.raises(UserError, match="does not exist"):
        run_emergence(tmp_path / "nothing", "icc-heldout", tmp_path / "out", fields=FIELDS, progress=False)


def test_the_emergence_and_momentum_commands(run, tmp_path):
    """The CLI glue: both commands run end to end at toy sizes and write their table and figures."""
    import typer
    from typer.testing import CliRunner

    from iclgd.cli import pretrain as pretrain_cli

    app = typer.Typer()
    pretrain_cli.register(app)
    runner = CliRunner()
    done = runner.invoke(app, ["emergence", "--run", str(run), "--out", str(tmp_path / "e"), "--shots", "4",
                               "--eval-size", "6", "--lr", "0.01", "--no-progress"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert "ICL acc" in done.output and (tmp_path / "e" / "_plots" / "emergence.png").stat().st_size > 0
    done = runner.invoke(app, ["momentum", "--out", str(tmp_path / "m"), "--seeds", "1", "--steps", "3",
                               "--length", "16", "--k", "0", "--k", "2", "--demo-seeds", "1", "--eval-size", "6",
                               "--sequences", "8", "--momentum", "learned:0.5", "--no-progress"],
                         env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert "momentum-learned0.5 − vanilla" in done.output and (tmp_path / "m" / "momentum.png").is_file()


def test_one_checkpoint_and_one_logged_step_still_draw_their_points(monkeypatch, tmp_path):
    """A run shorter than its log_every logs the circuit once and may keep one checkpoint: each line is one point,
    which matplotlib draws only with a marker."""
    import iclgd.report.emergence as report

    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda figure, stem: drawn.append(figure) or [])
    values = {("trained", "icl", "accuracy"): {100: (0.5, 0.4, 0.6)},
              ("untrained:all", "icl", "accuracy"): {100: (0.3, None, None)},
              ("trained", "gd", "simaou_norm"): {100: (0.2, 0.1, 0.3)},
              ("untrained:all", "gd", "simaou_norm"): {100: (0.25, None, None)}}
    report.plot_emergence(values, tmp_path / "fig", circuit={"induction_score": {100: 0.4}})
    lines = [line for axis in drawn[0].axes for line in axis.get_lines() if len(line.get_xdata()) == 1]
    assert len(lines) >= 5 and all(line.get_marker() not in (None, "None", "") for line in lines)
