"""Pretraining: tiny runs, bit-identical resumption, the saved folder, bad input."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from iclgd.errors import UserError
from iclgd.synthetic.pretrain import train as train_module
from iclgd.synthetic.pretrain.config import load_config
from iclgd.synthetic.pretrain.train import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FINAL_FILES,
    FINAL_STAGING,
    is_complete,
    pretrain,
    sinusoids,
)

TINY = dict(steps=40, batch_size=4, n_embd=16, n_head=2, n_layer=2, n_positions=32, checkpoint_every=10,
            log_every=5, threads=1, warmup_steps=5)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    config = load_config(None, **TINY)
    straight = pretrain(config, tmp_path / "straight", progress=False)
    assert straight.steps == 40
    first = pretrain(config, tmp_path / "resumed", progress=False, stop_after=20)  # "killed" after 20 steps
    assert first.steps == 20 and not (tmp_path / "resumed" / "model.safetensors").exists()
    assert torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=False)["step"] == 20
    second = pretrain(config, tmp_path / "resumed", progress=False)
    assert second.steps == 20
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert log == (tmp_path / "straight" / "log.csv").read_text().splitlines()[:1] + log[1:]
    assert [int(r.split(",")[0]) for r in log[1:]] == list(range(5, 41, 5))
    seconds = [float(r.split(",")[3]) for r in log[1:]]
    assert seconds == sorted(seconds)  # the whole run's time: a resume goes on from the last kept row
    assert log[0] == ("step,loss,lr,seconds,icl_accuracy,previous_token_score,label_attention,induction_score,"
                      "induction_share")
    # the ICL probe of the icc corpus and the circuit's progress measures: shares of attention
    assert all(0 <= float(value) <= 1 + 1e-6 for r in log[1:] for value in r.split(",")[4:])
    # a complete run is left alone
    assert pretrain(config, tmp_path / "straight", progress=False).steps == 0
    # another seed gives other weights
    other = pretrain(load_config(None, **{**TINY, "seed": 1}), tmp_path / "other", progress=False)
    assert other.steps == 40 and not torch.equal(_weights(tmp_path / "other")["transformer.wte.weight"],
                                                 a["transformer.wte.weight"])


@pytest.mark.parametrize("kept", [5, 8])
def test_a_log_from_before_the_circuit_measures_is_resumed(tmp_path, kept):
    """A run killed under an iclgd whose log had five columns (before the circuit measures) or eight (before
    induction_share) resumes: its rows get the missing measures empty, and keep the others."""
    config = load_config(None, **TINY)
    pretrain(config, tmp_path, progress=False, stop_after=20)
    path = tmp_path / "log.csv"
    rows = path.read_text().splitlines()
    path.write_text("\n".join(",".join(row.split(",")[:kept]) for row in rows) + "\n")
    pretrain(config, tmp_path, progress=False)
    log = [row.split(",") for row in path.read_text().splitlines()]
    assert log[0][-2:] == ["induction_score", "induction_share"] and len(log) == 9
    assert all(len(r) == 9 for r in log)
    assert all(all(r[:kept]) and not any(r[kept:]) for r in log[1:5]) and all(all(r) for r in log[5:])
    assert train_module.onset_step(tmp_path, threshold=0.0) == 5


def test_the_run_records_its_environment_and_a_resume_elsewhere_is_warned_of(tmp_path, capsys):
    """The weights depend on library versions and the CPU type besides the config: the run records them, and
    resuming under others says so (the run goes on)."""
    import json
    from importlib import metadata

    config = load_config(None, **TINY)
    pretrain(config, tmp_path, progress=False, stop_after=10)
    recorded = json.loads((tmp_path / train_module.ENVIRONMENT_FILE).read_text())
    assert recorded["torch"] == metadata.version("torch") and recorded["cpu"]
    assert recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    pretrain(config, tmp_path, progress=False, stop_after=10)
    assert "warning" not in capsys.readouterr().err  # same environment: silent
    (tmp_path / train_module.ENVIRONMENT_FILE).write_text(json.dumps({**recorded, "cpu_capability": "AVX2",
                                                                      "torch": "2.0.0"}))
    assert pretrain(config, tmp_path, progress=False).steps == 20
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "started with other cpu_capability, torch" in err


def test_a_damaged_log_stops_the_resume_with_one_line(tmp_path):
    config = load_config(None, **TINY)
    pretrain(config, tmp_path, progress=False, stop_after=10)
    path = tmp_path / "log.csv"
    path.write_text(path.read_text().replace(",", ";", 3))
    with pytest.raises(UserError, match="log.csv is damaged") as error:
        pretrain(config, tmp_path, progress=False)
    assert "\n" not in str(error.value)
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)["step"] == 10  # nothing trained or written


def test_circuit_measures_by_hand():
    """[BOS] x0 y SEP x1 y SEP x0: layer 0 head 0 attends from the labels to their inputs with 1 and 0.5; in layer
    1 head 0 puts 0.6 on the query's own label and 0.2 on the other (induction share 0.6 / 0.8), head 1 (the most
    label attention, 0.9) 0.1 and 0.8 (an anti-induction head), head 2 0.1 and 0: the share is head 0's, the head
    of the largest induction score."""
    from iclgd.synthetic.pretrain.icc import ICC

    corpus = ICC()
    ids = np.array([[0, corpus.input_id(0), corpus.label_id(1), 1, corpus.input_id(1), corpus.label_id(2), 1,
                     corpus.input_id(0)]])
    layer0, layer1 = torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 8, 8)
    layer0[0, 0, 2, 1], layer0[0, 0, 5, 4], layer0[0, 0, 5, 5] = 1.0, 0.5, 0.5
    layer1[0, 0, 7, [2, 5, 7]] = torch.tensor([0.6, 0.2, 0.2])
    layer1[0, 1, 7, [0, 2, 5]] = torch.tensor([0.1, 0.1, 0.8])
    layer1[0, 2, 7, [0, 2]] = torch.tensor([0.9, 0.1])  # share 1, but the smallest induction score: not the one
    measures = train_module.circuit_measures((layer0, layer1), ids, corpus)
    assert measures == pytest.approx({"previous_token_score": 0.75, "label_attention": 0.9, "induction_score": 0.6,
                                      "induction_share": 0.75})
    layer1[0, :, 7] = 0.0
    layer1[0, :, 7, 0] = 1.0  # no head attends to the labels: share 0, not NaN
    assert train_module.circuit_measures((layer0, layer1), ids, corpus)["induction_share"] == 0.0


def test_one_layer_models_log_no_circuit_measures(tmp_path):
    """The induction circuit needs two layers: a one-layer run logs its ICL probe and empty measures."""
    pretrain(load_config(None, **{**TINY, "steps": 5, "n_layer": 1}), tmp_path, progress=False)
    (row,) = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert 0 <= float(row.split(",")[4]) <= 1 and row.endswith(",,,,")


@pytest.mark.parametrize("name", ["icc-gpt2", "icc-exemplars-gpt2"])
def test_shipped_models_have_an_induction_circuit(name):
    """The probe's measures on the shipped models, which learn in context: layer 0 has a previous-token head and
    the query of layer 1 attends to the labels of its own input (Olsson et al. 2022); chance would be ~1/6 of
    the label attention (6 inputs in the held-out mapping)."""
    from transformers import AutoModelForCausalLM

    from iclgd.models.offline import SHIPPED_MODELS
    from iclgd.synthetic.pretrain.config import PretrainConfig
    from iclgd.synthetic.pretrain.corpora import make_corpus

    config = PretrainConfig(**yaml.safe_load((SHIPPED_MODELS[name] / CONFIG_FILE).read_text()))
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_MODELS[name])
    probe = train_module.icl_probe(model, make_corpus(config.corpus, config.corpus_options), config)
    assert probe["icl_accuracy"] > 0.95 and probe["previous_token_score"] > 0.95
    assert probe["label_attention"] > 0.85 and probe["induction_score"] > 0.85 and probe["induction_share"] > 0.9
    assert model.config._attn_implementation == "sdpa"  # restored after the eager pass


def test_saved_folder_loads_like_a_hub_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iclgd.models.families import family_of

    config = load_config(None, **{**TINY, "steps": 3})
    pretrain(config, tmp_path, progress=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(model).__name__ == "GPT2LMHeadModel" and family_of(model).name == "gpt2"
    assert tokenizer.eos_token == "<|endoftext|>" and model.config.vocab_size == len(tokenizer)
    recorded = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    assert recorded["steps"] == 3 and recorded["corpus"] == "icc"
    mode = 0o666 & ~_umask()  # safetensors writes 0600; the saved folder is readable like any other
    assert {os.stat(tmp_path / name).st_mode & 0o777 for name in FINAL_FILES} == {mode}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_untied_embeddings_and_init_std_train_resume_and_load(tmp_path):
    """tie_embeddings: false gives the unembedding its own weights (saved, resumed and loaded as such); init_std
    is the std of the initial weights."""
    from transformers import AutoModelForCausalLM

    from iclgd.synthetic.pretrain.corpora import make_corpus
    from iclgd.synthetic.pretrain.train import build_model

    config = load_config(None, **{**TINY, "steps": 6, "checkpoint_every": 3, "tie_embeddings": False})
    pretrain(config, tmp_path / "straight", progress=False)
    pretrain(config, tmp_path / "resumed", progress=False, stop_after=3)
    pretrain(config, tmp_path / "resumed", progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "straight")
    assert model.config.tie_word_embeddings is False
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    assert torch.equal(model.lm_head.weight, a["lm_head.weight"])
    tied = build_model(load_config(None, **TINY), make_corpus("icc", {}))
    assert tied.lm_head.weight is tied.transformer.wte.weight  # GPT-2's default
    corpus = make_corpus("icc-exemplars", {})
    for std in (0.01, 0.05):
        weight = build_model(load_config(None, corpus="icc-exemplars", init_std=std), corpus).transformer.wte.weight
        assert weight.std().item() == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize("corpus", ["ginc", "markov"])
def test_other_corpora_pretrain(tmp_path, corpus):
    config = load_config(None, **{**TINY, "steps": 2, "corpus": corpus, "log_every": 1})
    assert pretrain(config, tmp_path, progress=False).steps == 2
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(r.endswith(",") for r in rows)  # no held-out mappings: no ICL probe


def test_sinusoidal_positions():
    table = sinusoids(5, 4)
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert table[3, 0].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item())
    assert table[3, 3].item() == pytest.approx(torch.cos(torch.tensor(3.0 / 100)).item())


def test_bad_input(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an iclgd pretrain run"):
        pretrain(load_config(None, **TINY), foreign, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(UserError, match="unknown corpus"):
        pretrain(load_config(None, **{**TINY, "corpus": "wikitext"}), tmp_path / "a", progress=False)
    with pytest.raises(UserError, match="n_layer"):
        load_config(None, **{**TINY, "n_layer": 0})
    with pytest.raises(UserError, match="too small"):
        pretrain(load_config(None, **{**TINY, "vocab_size": 10}), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run = tmp_path / "run"
    pretrain(load_config(None, **{**TINY, "steps": 2}), run, progress=False)
    with pytest.raises(UserError, match=r"another config \(lr [0-9.e-]+ there, 0.0001 now\); give a new folder"):
        pretrain(load_config(None, **{**TINY, "steps": 2, "lr": 1e-4}), run, progress=False)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from iclgd.cli import main

    monkeypatch.setattr(sys, "argv", ["iclgd", "pretrain", "--corpus", "nope", "--out", str(tmp_path / "x"),
                                      "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "unknown corpus" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name, corpus", [("icc-gpt2", "icc"), ("icc-exemplars-gpt2", "icc-exemplars")])
def test_shipped_checkpoint_was_trained_with_its_corpus_recipe(name, corpus):
    """`iclgd pretrain --corpus <corpus>` runs the config the shipped checkpoint records (so it reproduces it)."""
    from iclgd.models.offline import SHIPPED_MODELS
    from iclgd.synthetic.pretrain.config import PretrainConfig

    recorded = PretrainConfig(**yaml.safe_load((SHIPPED_MODELS[name] / CONFIG_FILE).read_text()))
    assert recorded.identity() == load_config(None, corpus=corpus).identity()
    assert recorded.threads == load_config(None).threads == 1  # the float sums depend on the thread count


@pytest.mark.parametrize("killed_at", ["tokenizer", "moves"])
def test_a_run_killed_during_its_final_save_is_completed_by_the_rerun(tmp_path, monkeypatch, killed_at):
    """Killed after the model was saved but before the tokenizer, or between two of the final renames: the run is
    not complete, the rerun saves again from the last checkpoint, and the folder equals an uninterrupted run's."""
    config = load_config(None, **{**TINY, "steps": 6, "checkpoint_every": 3, "log_every": 3})
    pretrain(config, tmp_path / "straight", progress=False)
    run = tmp_path / "killed"
    with monkeypatch.context() as patch:
        if killed_at == "tokenizer":
            from transformers import PreTrainedTokenizerFast

            def kill(*args, **kwargs):
                raise KeyboardInterrupt("killed while saving the tokenizer")

            patch.setattr(PreTrainedTokenizerFast, "save_pretrained", kill)
        else:
            moves = []
            real_replace = os.replace

            def kill(src, dst):
                if Path(src).parent.name == FINAL_STAGING:
                    if len(moves) == 2:
                        raise KeyboardInterrupt("killed between two renames")
                    moves.append(dst)
                real_replace(src, dst)

            patch.setattr(train_module.os, "replace", kill)
        with pytest.raises(KeyboardInterrupt):
            pretrain(config, run, progress=False)
    assert not is_complete(run) and (run / CHECKPOINT_FILE).is_file()
    if killed_at == "moves":
        assert sum((run / name).is_file() for name in FINAL_FILES) == 2  # two files moved, three not
    again = pretrain(config, run, progress=False)
    assert again.steps == 0 and again.saved and is_complete(run)
    assert not (run / FINAL_STAGING).exists()
    for name in FINAL_FILES:
        assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert pretrain(config, run, progress=False).saved is False  # now complete: left alone


def test_resume_only_at_the_thread_count_of_the_run(tmp_path):
    config = load_config(None, **TINY)
    pretrain(config, tmp_path, progress=False, stop_after=10)
    with pytest.raises(UserError, match="threads=1 .* resume with --threads 1"):
        pretrain(load_config(None, **{**TINY, "threads": 2}), tmp_path, progress=False)
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)["step"] == 10  # untouched
    pretrain(config, tmp_path, progress=False)
    done = pretrain(load_config(None, **{**TINY, "threads": 2}), tmp_path, progress=False)  # nothing to train
    assert done.steps == 0 and not done.saved


def test_kept_checkpoints_survive_a_resume_and_leave_training_alone(tmp_path, capsys):
    """keep_every writes loadable model folders at step 0, every N steps and the last step; a run killed after a kept
    folder but before its checkpoint rewrites that folder identically, and the weights equal a run that keeps none."""
    from transformers import AutoModelForCausalLM

    from iclgd.synthetic.pretrain.train import kept_folder

    config = load_config(None, **{**TINY, "keep_every": 15})
    pretrain(load_config(None, **TINY), tmp_path / "plain", progress=False)
    pretrain(config, tmp_path / "straight", progress=False)
    pretrain(config, tmp_path / "resumed", progress=False, stop_after=15)  # kept 15, last checkpoint at 10
    assert torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=False)["step"] == 10
    pretrain(config, tmp_path / "resumed", progress=False)
    steps = [0, 15, 30, 40]
    for run in ("straight", "resumed"):
        assert sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir()) == [f"step-{s:06d}" for s in steps]
    for step in steps:
        a, b = _weights(kept_folder(tmp_path / "straight", step)), _weights(kept_folder(tmp_path / "resumed", step))
        assert all(torch.equal(a[k], b[k]) for k in a)
    last, plain = _weights(kept_folder(tmp_path / "resumed", 40)), _weights(tmp_path / "plain")
    assert all(torch.equal(last[k], plain[k]) for k in plain)
    assert _weights(kept_folder(tmp_path / "straight", 0)).keys() == plain.keys()
    assert AutoModelForCausalLM.from_pretrained(kept_folder(tmp_path / "straight", 15)).config.n_layer == 2
    assert load_config(None, **TINY).identity() == config.identity()  # keep_every does not change the run
    pretrain(config, tmp_path / "plain", progress=False)  # complete, trained without keeping: said on stderr
    assert "checkpoints are kept only while training" in capsys.readouterr().err


@pytest.mark.parametrize("learned", [False, True])
def test_momentum_attention_pretrains_resumes_and_loads(tmp_path, learned):
    """`attention: momentum`: the same resumable run, saved as iclgd's momentum GPT-2 (loaded by iclgd's loader);
    learned decays move with training."""
    from iclgd.models.loading import load_model
    from iclgd.models.momentum import MomentumGPT2LMHeadModel

    config = load_config(None, **{**TINY, "steps": 20, "attention": "momentum", "momentum_eta": 0.8,
                                  "momentum_learned": learned})
    straight = pretrain(config, tmp_path / "straight", progress=False)
    pretrain(config, tmp_path / "resumed", progress=False, stop_after=10)
    pretrain(config, tmp_path / "resumed", progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.steps == 20 and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ("transformer.h.0.attn.momentum_logit" in a) is learned
    if learned:
        assert not torch.allclose(a["transformer.h.0.attn.momentum_logit"], torch.logit(torch.tensor(0.8)))
    lm = load_model(str(tmp_path / "straight"))
    assert type(lm.model) is MomentumGPT2LMHeadModel and lm.model.config.momentum_eta == 0.8
    vanilla = pretrain(load_config(None, **{**TINY, "steps": 20}), tmp_path / "vanilla", progress=False)
    assert vanilla.final_loss != straight.final_loss  # the same seed and data, another attention
    with pytest.raises(UserError, match="learned momentum decays start"):
        load_config(None, **{**TINY, "attention": "momentum", "momentum_eta": 0.0, "momentum_learned": True})
