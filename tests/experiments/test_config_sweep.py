"""Configs from YAML + CLI overrides, unit ids, and sweep expansion."""

import pytest

from iclgd.errors import UserError
from iclgd.experiments.config import load_config
from iclgd.experiments.sweep import check_units, expand, load_sweep


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: gpt2\ntask: sst2\nshots: 16\nlr: 0.001\n")
    cfg = load_config(path, {"shots": 8, "seed": None})
    assert (cfg.model, cfg.shots, cfg.seed, cfg.lr, cfg.methods) == ("gpt2", 8, 1, 0.001, ["gd"])


@pytest.mark.parametrize("text, message", [("model: gpt2\ntask: sst2\nshotz: 3\n", "shotz"),
                                           ("model: [unclosed\n", "not valid YAML"),
                                           ("- a\n- b\n", "mapping"),
                                           ("model: gpt2\ntask: sst2\nposition: middle\n", "position")])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(path, {})
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", {})


def test_unit_id_depends_on_what_is_computed_only():
    base = load_config(None, {"model": "gpt2", "task": "sst2", "lr": 1e-3})
    assert base.unit_id() == load_config(None, {"model": "gpt2", "task": "sst2", "lr": 1e-3, "out": "x",
                                                "batch_size": 3}).unit_id()
    assert base.unit_id() != load_config(None, {"model": "gpt2", "task": "sst2", "lr": 2e-3}).unit_id()
    assert base.unit_id().startswith("sst2-k32-s1-o0-")


def test_sweep_expands_runs_times_grid(tmp_path):
    spec = {"base": {"model": "m", "task": "cb", "lr": 0.08},
            "runs": [{"seed": 3, "order": 0}, {"seed": 4, "order": 1}],
            "grid": {"untrained": [None, "all"]}, "out": str(tmp_path / "r")}
    configs = expand(spec)
    assert [(c.seed, c.order, c.untrained) for c in configs] == [(3, 0, None), (3, 0, "all"), (4, 1, None),
                                                                 (4, 1, "all")]
    assert {c.out for c in configs} == {str(tmp_path / "r")}
    assert len({c.unit_id() for c in configs}) == 4
    with pytest.raises(UserError, match="unknown sweep key"):
        expand({**spec, "gird": {}})
    with pytest.raises(UserError, match="grid"):
        expand({**spec, "grid": {"seed": 3}})


def test_shipped_sweep_files_expand():
    spec = load_sweep("configs/deutch2024/sst2.yaml")
    configs = expand(spec)
    assert len(configs) == 3 * 4 and {(c.seed, c.order) for c in configs} == {(2, 0), (3, 1), (4, 2)}
    assert all(c.methods == ["gd", "lcgd"] and c.lr == 5e-4 for c in configs)


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_offline_sweeps_are_the_readme_grid(model):
    """The real-LM sweeps the README reports: 4 real tasks x (trained, untrained all), GD and LCGD, k = 8."""
    configs = expand(load_sweep(f"configs/offline/{model}.yaml"))
    assert len(configs) == 8 and len({c.unit_id() for c in configs}) == 8
    assert {c.task for c in configs} == {"fortune-topic", "vader-movie", "vader-nyt", "wordnet-noun"}
    assert {c.untrained for c in configs} == {None, "all"}
    assert all(c.model == model and c.shots == 8 and c.methods == ["gd", "lcgd"] and c.lr for c in configs)
    check_units(configs)  # the tasks ship with iclgd, so every unit's task, template and k check offline


def test_eval_sizes_past_the_split_are_one_unit(capsys):
    """Within a split (sst2's fixture has 24 eval rows) each eval_size is its own unit; past it, every size is the
    whole split: one unit, warned once per size asked."""
    from iclgd import errors
    from iclgd.experiments.compare import capped_eval_sizes
    from iclgd.tasks import FIXTURES_DIR

    errors._SAID.clear()  # warned once per process
    configs = [load_config(None, {"model": "gpt2", "task": "sst2", "lr": 1e-3, "data_dir": str(FIXTURES_DIR),
                                  "eval_size": size}) for size in (None, 23, 24, 25, 1000, 1000)]
    capped = capped_eval_sizes(configs)
    assert [c.eval_size for c in capped] == [None, 23, 24, 24, 24, 24]
    assert len({c.unit_id() for c in capped}) == 3  # None (the task's default), 23, and the whole split
    err = capsys.readouterr().err
    assert err.count("eval_size 1000 is more than the 24 rows") == 1 and err.count("eval_size 25 ") == 1
