import pytest
import typer
from typer.testing import CliRunner

from iclgd.cli import data as data_cli
from iclgd.errors import UserError
from iclgd.tasks import hub as hub_module
from iclgd.tasks import load_splits, load_task
from iclgd.tasks.make_fixtures import fixture_dataset_dict


@pytest.fixture
def app():
    app = typer.Typer()
    data_cli.register(app)
    return app


def test_tasks_table(app):
    result = CliRunner().invoke(app, ["tasks"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for needle in ("sst2", "nyu-mll/glue (sst2)", "train / test", "Sci/Tech→' Technology'", "synthetic-topic",
                   "iclgd/tasks/data/icc-exemplars-heldout"):  # shipped data relative to the package: the same
        assert needle in result.output                            # table wherever iclgd is installed


def test_prepare_data_writes_snapshots(app, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "fetch_hub", lambda task: (fixture_dataset_dict(task.name), "b" * 40))
    result = CliRunner().invoke(app, ["prepare-data", "--task", "sst5", "--task", "synthetic-topic",
                                      "--out", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "nothing to prepare" in result.output and "--data-dir" in result.output
    assert load_splits(load_task("sst5"), data_dir=tmp_path).revision == "b" * 40
    local = CliRunner().invoke(app, ["prepare-data", "--task", "synthetic-topic", "--out", str(tmp_path / "none")],
                               env={"COLUMNS": "250"})
    assert local.exit_code == 0 and "nothing to prepare" in local.output  # no folder written, none pointed at
    assert "--data-dir" not in local.output and not (tmp_path / "none").exists()


def test_prepare_data_all_covers_the_hub_tasks(app, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "fetch_hub", lambda task: (fixture_dataset_dict(task.name), "c" * 40))
    result = CliRunner().invoke(app, ["prepare-data", "--task", "all", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["sst2", "sst5", "mr", "subj", "agnews", "cb", "rte"])


def test_prepare_data_needs_an_output_folder(app, monkeypatch):
    monkeypatch.delenv("ICLGD_DATA_DIR", raising=False)
    result = CliRunner().invoke(app, ["prepare-data", "--task", "sst2"])
    assert isinstance(result.exception, UserError) and "--out" in str(result.exception)
