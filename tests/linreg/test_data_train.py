"""Data, init, training recipe, reproducibility and the run folder."""

import math

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from iclgd.errors import UserError
from iclgd.synthetic.linreg.config import TrainConfig, load_config
from iclgd.synthetic.linreg.data import generator, sample_tasks, stream_seeds, torch_generator
from iclgd.synthetic.linreg.lsa import LSA, variance_scaling_init_
from iclgd.synthetic.linreg.run import load_run
from iclgd.synthetic.linreg.train import train, train_model

TINY = dict(d=3, n_context=5, batch_size=64, eval_tasks=100, eval_every=5)


@pytest.mark.parametrize("input_range,bound", [(1.0, 0.5), (2.0, 1.0)])
def test_tasks_follow_the_spec(input_range, bound):
    tasks = sample_tasks(4000, 5, 2, 7, input_range=input_range, weight_scale=2.0, gen=generator(0),
                         dtype=torch.float64)
    assert tasks.x.shape == (4000, 7, 5) and tasks.y.shape == (4000, 7, 2) and tasks.x_query.shape == (4000, 5)
    assert tasks.x.abs().max() <= bound and tasks.x.abs().max() > 0.99 * bound
    assert tasks.x.mean().abs() < 0.01 and tasks.x.var().item() == pytest.approx((2 * bound) ** 2 / 12, rel=0.02)
    assert tasks.w.std().item() == pytest.approx(2.0, rel=0.03)
    assert torch.allclose(tasks.y, tasks.x @ tasks.w.transpose(1, 2))
    assert torch.allclose(tasks.y_query, (tasks.w @ tasks.x_query.unsqueeze(-1)).squeeze(-1))


def test_one_seed_fixes_the_streams():
    assert stream_seeds(3) == stream_seeds(3) and stream_seeds(3) != stream_seeds(4)
    assert len(set(stream_seeds(3).values())) == len(stream_seeds(3))
    a = sample_tasks(10, 3, 1, 4, gen=generator(stream_seeds(3)["eval"]))
    b = sample_tasks(10, 3, 1, 4, gen=generator(stream_seeds(3)["eval"]))
    assert torch.equal(a.x, b.x) and torch.equal(a.w, b.w)


def test_official_defaults():
    one, three, four = TrainConfig(), TrainConfig(layers=3), TrainConfig(layers=4)
    assert (one.steps, one.lr, one.init_scale, one.batch_size, one.beta2) == (5000, 1e-3, 0.002, 2048, 0.98)
    assert (three.steps, three.lr, three.init_scale) == (20_000, 1e-3, pytest.approx(0.002 / 3))
    assert four.lr == 5e-4 and (one.grad_clip, three.grad_clip) == (0.0, 10.0)
    assert (one.d, one.m, one.n_context, one.input_range, one.eval_tasks) == (10, 1, 10, 1.0, 10_000)


def test_init_is_truncated_variance_scaling():
    model = LSA(60, 4, 2, layers=1)  # width 64: 4 · 64² entries
    variance_scaling_init_(model, 0.002, torch_generator(0))
    weights = torch.cat([p.flatten() for p in model.parameters()])
    target_std = math.sqrt(0.002 / 64)  # the variance scale is the variance of the truncated distribution
    assert weights.std().item() == pytest.approx(target_std, rel=0.03)
    assert weights.abs().max() <= 2 * target_std / 0.87962566103423978


@pytest.mark.parametrize("bad", [dict(d=0), dict(n_context=0), dict(m=0), dict(layers=0), dict(unknown=1),
                                 dict(input_range=-1.0)])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError, match=next(iter(bad))):
        load_config(TrainConfig, None, bad)


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("layers: 2\nsteps: 7\nout: runs/x\n")
    config = load_config(TrainConfig, path, {"steps": 9, "seed": None})
    assert (config.layers, config.steps, config.out, config.seed) == (2, 9, "runs/x", 0)
    path.write_text("layers: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(TrainConfig, path)
    with pytest.raises(UserError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_training_is_reproducible_and_learns():
    config = TrainConfig(steps=25, lr=3e-2, **TINY)
    first, second = train_model(config, progress=False), train_model(config, progress=False)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert first.curve["eval_loss"][-1] < 0.8 * first.curve["eval_loss"][0]
    other = train_model(config.model_copy(update={"seed": 1}), progress=False)
    assert not torch.equal(first.model.W_Q[0], other.model.W_Q[0])


def test_run_folder_round_trip(tmp_path):
    config = TrainConfig(steps=3, layers=2, recurrent=True, **TINY)
    result = train(config, tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["kind"] == "linreg" and saved["steps"] == 3 and saved["lr"] == 1e-3
    loaded_config, model = load_run(tmp_path / "run")
    assert loaded_config.recurrent and model.W_Q[0].dtype == torch.float64 and len(model.W_Q) == 1
    assert torch.allclose(model.W_Q[0].float(), result.model.W_Q[0])
    curve = pq.read_table(tmp_path / "run" / "curve.parquet")
    metadata = curve.schema.metadata
    assert metadata[b"torch"].decode() == torch.__version__ and b"iclgd" in metadata
    assert curve.num_rows == 4 and curve.column("step").to_pylist() == [0, 1, 2, 3]
    again = train(config, tmp_path / "run", progress=False)  # the same run again: nothing to do
    assert again.already_done and torch.equal(again.model.W_Q[0], result.model.W_Q[0])
    with pytest.raises(UserError, match=rf"another config \(seed {config.seed} there, {config.seed + 1} now\): pass "
                                        "--overwrite"):
        train(config.model_copy(update={"seed": config.seed + 1}), tmp_path / "run", progress=False)
    train(config, tmp_path / "run", overwrite=True, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_run(tmp_path / "missing")
    (tmp_path / "config.yaml").write_text("model: gpt2\n")
    with pytest.raises(UserError, match="not a linreg run"):
        load_run(tmp_path)


def test_gradient_clipping_changes_the_update():
    config = TrainConfig(steps=2, **TINY)
    plain = train_model(config, progress=False).model
    clipped = train_model(config.model_copy(update={"grad_clip": 1e-12}), progress=False).model
    initial = train_model(config.model_copy(update={"steps": 0}), progress=False).model
    # Adam's eps (1e-8) dominates a gradient clipped to norm 1e-12: the clipped run barely moves
    assert (clipped.W_Q[0] - initial.W_Q[0]).abs().max() < 1e-5 < (plain.W_Q[0] - initial.W_Q[0]).abs().max()
