"""Bad input to every command: exit status 2, exactly one line on stderr (``error: ...``), nothing written.

Each case runs the CLI (``iclgd.cli.main`` on ``sys.argv``) in an empty working folder; the table gives the
arguments and a piece of the expected error line. ``{model}`` is the shipped 76k-parameter LM, ``{assets}`` a
folder of broken inputs made once for the module, ``{ro}`` a folder where no file can be created, ``{work}`` the
working folder. After each case the working folder and the assets are exactly as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from iclgd.cli import main
from iclgd.runner import unit_id

MODEL = Path(__file__).resolve().parent.parent / "src" / "iclgd" / "assets" / "icc-gpt2"
UNIT = ["--model", "{model}", "--task", "icc-heldout", "--eval-size", "8", "--shots", "4", "--lr", "0.01"]
CURVE = ["icl-curve", "--model", "{model}", "--task", "icc-heldout", "--eval-size", "8", "--k", "1", "--seeds", "1",
         "--no-progress"]
PRETRAIN = ["pretrain", "--steps", "2", "--no-progress"]
SPARSITY = ["weights", "sparsity", "--model", "{model}"]
PERTURB = ["weights", "perturb", "--model", "{model}", "--task", "icc-heldout", "-k", "2", "--eval-size", "4",
           "--sigma", "0", "--no-progress"]
CHECKPOINTS = ["weights", "checkpoints", "--task", "icc-heldout", "-k", "2", "--eval-size", "4", "--no-progress"]
REPRODUCE = ["reproduce", "deutch2024", "--quick", "--model", "{model}", "--out", "{work}/r"]
SWEEP_BASE = "base: {{model: {model}, task: icc-heldout, eval_size: 8, shots: 4, lr: 0.01}}\n"


def _writable(folder: Path) -> bool:
    try:
        handle, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def _broken_model(folder: Path, name: str, change) -> str:
    """A copy of the shipped model whose model.safetensors is changed by ``change(path)``."""
    target = folder / name
    shutil.copytree(MODEL, target)
    change(target / "model.safetensors")
    return str(target)


def _with_value(value: float):
    def change(path: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(path)
        tensors["transformer.h.1.attn.c_attn.weight"][3, 5] = value
        save_file(tensors, path, metadata={"format": "pt"})

    return change


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _local_task(root: Path, name: str, suffix: str, train: str, test: str, labels: str) -> None:
    """``<root>/<name>-task.yaml`` over ``<root>/<name>-data/{train,test}.<suffix>``; ``labels``: its label lines."""
    data = root / f"{name}-data"
    data.mkdir()
    (data / f"train.{suffix}").write_text(train)
    (data / f"test.{suffix}").write_text(test)
    (root / f"{name}-task.yaml").write_text(f"task: {name}\ndataset_path: {data}\ntraining_split: train\n"
                                           f"test_split: test\ndoc_to_text: '{{text}}'\n{labels}")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Broken models, bad files and folders, a small results folder, a linreg run and a half-trained pretrain
    run: made once, then only read."""
    from iclgd.runner import run_sweep
    from iclgd.synthetic.linreg.config import TrainConfig
    from iclgd.synthetic.linreg.train import train as linreg_train
    from iclgd.synthetic.pretrain.config import load_config as pretrain_config
    from iclgd.synthetic.pretrain.train import pretrain
    from tests.runner.helpers import fake_result, run_fake

    root = tmp_path_factory.mktemp("assets")
    values = {"model": str(MODEL), "assets": str(root)}
    values["nan_model"] = _broken_model(root, "nan-model", _with_value(float("nan")))
    values["inf_model"] = _broken_model(root, "inf-model", _with_value(float("-inf")))
    values["truncated_model"] = _broken_model(root, "truncated-model", _truncate)
    values["garbage_model"] = _broken_model(root, "garbage-model", lambda p: p.write_bytes(b"not safetensors" * 9))
    values["empty_model"] = _broken_model(root, "empty-model", lambda p: p.write_bytes(b""))
    no_tokenizer = shutil.copytree(MODEL, root / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    (root / "not-a-model").mkdir()
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(root / "bert")
    (root / "empty-dir").mkdir()
    shutil.copytree(MODEL, root / "step-models" / "step-000100")  # checkpoints without the run that made them
    (root / "file.txt").write_text("a file\n")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    # configs
    (root / "bad.yaml").write_text("shots: [unclosed\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "extra.yaml").write_text("model: x\ntask: y\nwings: 2\n")
    (root / "typo.yaml").write_text("model: x\ntask: y\neval_sise: 10\n")
    (root / "typo-no-field.yaml").write_text("task: y\neval_sise: 10\n")  # the typo explains the missing key
    (root / "pretrain-typo.yaml").write_text("corpus: icc\nstpes: 10\n")
    (root / "lr-inf.yaml").write_text("lr: .inf\n")
    (root / "exemplars-float.yaml").write_text("corpus: icc-exemplars\ncorpus_options: {exemplars_per_input: 2.5}\n")
    (root / "init-zero.yaml").write_text("corpus: icc-exemplars\ninit_std: 0\n")
    (root / "tie-maybe.yaml").write_text("corpus: icc-exemplars\ntie_embeddings: maybe\n")
    (root / "label-draw.yaml").write_text("corpus: icc-exemplars\ncorpus_options: {label_draw: random}\n")
    # a task whose data files are empty
    _local_task(root, "empty", "jsonl", "", "", "label_field: label\ndoc_to_choice: {a: ' a', b: ' b'}\n")
    # integer labels named by numbers, in a CSV (every value text): "1" could be a name or an index
    _local_task(root, "stars", "csv", "text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(8)),
                "text,label\nx,1\ny,0\n", "label_names: ['1', '2']\ndoc_to_choice: {'1': ' one', '2': ' two'}\n")
    # a task whose eval rows hold no text (null in JSON lines)
    _local_task(root, "gap", "jsonl", "".join(f'{{"text": "row {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(8)),
                '{"text": null, "label": "a"}\n{"label": "b"}\n',
                "label_field: label\ndoc_to_choice: {a: ' a', b: ' b'}\n")
    # a task whose label word is two tokens of the shipped model's vocabulary
    _local_task(root, "twotoken", "jsonl", "".join(f'{{"text": "L{i % 3 + 1}", "label": "{"ab"[i % 2]}"}}\n'
                                                   for i in range(8)),
                "".join(f'{{"text": "L{i % 2 + 1}", "label": "{"ab"[i % 2]}"}}\n' for i in range(8)),
                "label_field: label\ndoc_to_choice: {a: ' L1 L6', b: ' L2'}\n")
    # sweeps
    base = SWEEP_BASE.format(**values)
    sweeps = {
        "unknown-key": base + "grids: {seed: [1, 2]}\n",
        "no-base": "grid: {seed: [1, 2]}\n",
        "grid-not-list": base + "grid: {seed: 3}\n",
        "bad-task-late": base + "grid: {task: [icc-heldout, icc-prior, no-such-task]}\n",
        "two-outs": base + "runs: [{out: a}, {out: b}]\n",
        "run-typo": base + "runs: [{seed: 2}, {mehtods: [gd]}]\n",
        "base-typo": base.replace("eval_size: 8", "eval_sise: 8") + "runs: [{seed: 2}, {seed: 3}]\n",
        "grid-typo": base + "grid: {sede: [1, 2]}\n",
        "lr-inf": base.replace("lr: 0.01", "lr: .inf"),
        "cuda": base + "grid: {device: [cpu, cuda]}\n",
        "bos-late": base + "grid: {bos: [null, 'L1 L6 L1']}\n",
        "context-late": base + "grid: {max_context: [null, 100000]}\n",
        "ft-shots-late": base + "grid: {ft_shots: [4, 100000]}\n",
        "orderings-late": base + "grid: {orderings: [1, 30]}\n",
        "layer-late": base + "grid: {methods: [[gd], ['wv:7-gd-label']]}\n",
        "label-late": base + f"grid: {{task: [icc-heldout, {root / 'twotoken-task.yaml'}]}}\n",
        "ok": base + "grid: {seed: [1, 2]}\n",
        "base-list": "base: [1, 2]\n",
        "grid-empty": base + "grid: {seed: []}\n",
        "seed-bool": base + "runs: [{seed: true}]\n",
        "missing-model": SWEEP_BASE.format(**{**values, "model": str(root / "missing")}),
    }
    for name, text in sweeps.items():
        (root / f"sweep-{name}.yaml").write_text(text)
    # a results folder holding the FT method gd only
    results = root / "results"
    run_sweep([{"task": "sst2", "k": 4, "seed": seed} for seed in (1, 2)], fake_result, results, progress=False)
    values["results"] = str(results)
    incomplete = root / "incomplete"  # a sweep stopped by its second unit
    with pytest.raises(ValueError):
        run_sweep([{"task": "sst2", "k": 4, "seed": 1}, {"task": "sst2", "k": 4, "seed": 2, "fail": True}],
                  run_fake, incomplete, progress=False)
    values["incomplete"] = str(incomplete)
    # a linreg run
    linreg_train(TrainConfig(steps=2, d=2, n_context=3, batch_size=8, eval_tasks=8, eval_every=1),
                 root / "linreg-run", progress=False)
    linreg_train(TrainConfig(steps=2, d=2, n_context=1, batch_size=8, eval_tasks=8, eval_every=1),
                 root / "linreg-n1", progress=False)
    (root / "ood-step-0.yaml").write_text("input_ranges: [0.5, 2.0, 0]\n")
    (root / "ood-backwards.yaml").write_text("weight_scales: [2.0, 0.5, 0.1]\n")
    (root / "no-thresholds.yaml").write_text("thresholds: []\n")
    # a pretrain run stopped after its first checkpoint, trained with one thread
    tiny = dict(steps=4, batch_size=2, n_embd=8, n_head=2, n_layer=1, n_positions=16, checkpoint_every=2,
                log_every=2, threads=1, warmup_steps=1)
    pretrain(pretrain_config(None, **tiny), root / "pretrain-run", progress=False, stop_after=2)
    (root / "tiny-pretrain.yaml").write_text("".join(f"{key}: {value}\n" for key, value in tiny.items()))
    # a folder where no file can be created: permission bits stop everyone but root; root meets /sys/kernel
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    values["ro"] = str(read_only if not _writable(read_only) else Path("/sys/kernel"))
    yield values
    read_only.chmod(0o755)


CASES = [
    # --- usage errors (typer's own click exceptions) -------------------------------------------------------
    (["nosuch"], "No such command 'nosuch'"),
    (["compar"], "Did you mean 'compare'"),
    (["--bogus"], "No such option: --bogus"),
    (["compare", "--shots", "abc"], "Invalid value for '--shots'"),
    (["compare", "--bogus"], "No such option: --bogus"),
    (["compare", "--lr"], "requires an argument. (see iclgd compare --help)"),
    (["sql"], "Missing argument 'out'"),
    (["icl-curve", "--task", "icc-heldout"], "Missing option '--model'"),
    (["linreg", "nosuch"], "No such command 'nosuch'"),
    (["linreg", "train", "--steps", "many"], "Invalid value for '--steps'"),
    (["report", "{results}", "extra"], "unexpected extra argument"),
    (["demo", "--eval-size", "abc"], "Invalid value for '--eval-size'"),
    (["pretrain", "--threads", "two"], "Invalid value for '--threads'"),
    (["emergence", "--run", "{assets}/missing", "--out", "{work}/e"], "does not exist"),
    (["emergence", "--run", "{assets}/empty-dir", "--out", "{work}/e"], "holds no checkpoints"),
    (["emergence", "--run", "{assets}/pretrain-run", "--out", "{work}/e"], "holds no checkpoints"),
    (["icl-curve", "--model", "{model}", "--task", "icc-exemplars-heldout", "--k", "2", "--seeds", "1",
      "--out", "{work}/c"], "input 'x26_9' maps only to the unknown token '<unk>'"),
    (["compare", "--model", "{model}", "--task", "icc-exemplars-heldout", "--shots", "2", "--lr", "0.01",
      "--eval-size", "4", "--out", "{work}/x"], "maps only to the unknown token '<unk>'"),
    (["pretrain", "--config", "{assets}/exemplars-float.yaml", "--out", "{work}/p"],
     "icc exemplars_per_input 2.5 must be a whole number >= 1"),
    (["pretrain", "--config", "{assets}/init-zero.yaml", "--out", "{work}/p"], "'init_std': Input should be greater"),
    (["pretrain", "--config", "{assets}/tie-maybe.yaml", "--out", "{work}/p"], "'tie_embeddings': Input should be"),
    (["pretrain", "--config", "{assets}/label-draw.yaml", "--out", "{work}/p"],
     "icc label_draw 'random' must be 'balanced'"),
    (["emergence", "--run", "{assets}/step-models", "--out", "{work}/e"], "no pretrain.yaml naming its corpus): give "
                                                                            "--task"),
    (["momentum", "--out", "{work}/m", "--corpus", "markov"], "corpus 'markov' has no held-out task: give --task"),
    (["momentum", "--out", "{work}/m", "--length", "abc"], "Invalid value for '--length'"),
    (["momentum", "--out", "{work}/m", "--k", "-2"], "k values [-2] must be >= 0"),
    (["momentum", "--out", "{work}/m", "--k", "99999"], "99999"),
    (["pretrain", "--momentum-eta", "0.5", "--out", "{work}/p"], "add --attention momentum"),
    (["momentum", "--out", "{work}/m", "--momentum", "1.2"], "--momentum '1.2': give η in [0, 1)"),
    (["momentum", "--out", "{work}/m", "--momentum", "learned:0"], "learned:η with η in (0, 1)"),
    (["momentum", "--out", "{work}/m", "--length", "16", "--length", "128"], "must lie in 2..64"),
    (["momentum", "--out", "{assets}/file.txt"], "is a file"),
    (["pretrain", "--attention", "linear", "--out", "{work}/p"],
     "'attention': Input should be 'vanilla' or 'momentum'"),
    (["pretrain", "--attention", "momentum", "--momentum-eta", "1.5", "--out", "{work}/p"],
     "'momentum_eta': Input should be less than 1"),
    # --- compare -------------------------------------------------------------------------------------------
    (["compare", *UNIT, "--position", "nonsense"], "'position'"),
    (["compare", *UNIT, "--device", "cuda"], "CUDA is not available"),
    (["compare", *UNIT, "--device", "cuda:1"], "CUDA is not available"),
    (["compare", *UNIT, "--device", "nonsense"], "unknown device 'nonsense'"),
    (["compare", *UNIT, "--seed", "-1"], "'seed'"),
    (["compare", "--model", "icc-gtp2", *UNIT[2:]], "did you mean 'icc-gpt2'? (iclgd models lists"),
    (["compare", *UNIT, "--shots", "0"], "'shots'"),
    (["compare", *UNIT, "--shots", "9999"], "pool has only"),
    (["compare", *UNIT, "--order", "-1"], "'order'"),
    (["compare", *UNIT, "--eval-size", "0"], "'eval_size'"),
    (["compare", *UNIT, "--lr", "1e38"], "gd diverged at lr 1e+38"),  # found after training; nothing written
    (["compare", *UNIT, "--lr", "inf"], "finite number"),
    (["compare", *UNIT, "--lr", "nan"], "finite number"),
    (["compare", *UNIT, "--lr", "0"], "'lr'"),
    (["compare", *UNIT, "--lr=-0.1"], "'lr'"),
    (["compare", *UNIT, "--max-context", "4"], "'max_context'"),
    (["compare", *UNIT, "--max-context", "6000"], "longer than the context"),
    (["compare", *UNIT, "--bos", "L1 L6 L1"], "BOS must be one token"),
    (["compare", *UNIT, "--separator", ""], "separator is empty: demos need text between them"),
    (["compare", "--model", "{model}", "--task", "{assets}/gap-task.yaml", "--shots", "2", "--lr", "0.01"],
     "has no text in field {text}"),
    (["compare", "--model", "{model}", "--task", "{assets}/stars-task.yaml", "--shots", "2", "--lr", "0.01"],
     "could be a label name or an index into the label names"),
    (["compare", "--model", "{assets}/no-tokenizer", "--task", "icc-heldout", "--lr", "0.01"],
     "cannot load the tokenizer of"),
    (["compare", "--model", "nothere.gguf", "--task", "icc-heldout", "--lr", "0.01"],
     "'nothere.gguf' is not a model folder or .gguf file (no such file or directory)"),
    (["compare", *UNIT, "--method", "whole-adam-label@"], "'' is not a learning rate"),
    (["compare", *UNIT, "--lr-search-rows", "0"], "'lr_search_rows'"),
    (["compare", *UNIT, "--template", "7"], "template 7 does not exist"),
    (["compare", *UNIT, "--template", "no field here"], "has no placeholder for the row's fields; add one, "
                                                         "e.g. 'Text: {text} Label:'"),
    (["compare", *UNIT, "--template", "Text: {{text}} Label: {{label}}"], "fills the label field {label}, which would "
                                                                      "show each query its answer"),
    (["compare", *UNIT, "--task", "no-such-task"], "unknown task"),
    (["compare", *UNIT, "--task", "{assets}/empty-task.yaml"], "is empty"),
    (["compare", *UNIT, "--dtype", "float64"], "'dtype'"),
    (["compare", *UNIT, "--untrained", "half"], "'untrained'"),
    (["compare", *UNIT, "--method", "sgd"], "'methods"),
    (["compare", *UNIT, "--method", "whole-gd-labels"], "unknown loss 'labels'"),
    (["compare", *UNIT, "--method", "whole-rmsprop"], "unknown optimizer 'rmsprop'"),
    (["compare", *UNIT, "--method", "wv:top-gd"], "unknown layer 'top'"),
    (["compare", *UNIT, "--method", "wv:40-gd"], "trains layer 40, but the model has"),
    (["compare", *UNIT, "--epochs", "0"], "'epochs'"),
    (["compare", *UNIT, "--epochs", "3", "--record-epoch", "5"], "record_epochs [5] lie outside the 3 epoch"),
    (["compare", *UNIT, "--orderings", "0"], "'orderings'"),
    (["compare", *UNIT, "--ft-shots", "0"], "'ft_shots'"),
    (["compare", *UNIT, "--ft-shots", "9999"], "lower ft_shots"),
    (["compare", *UNIT, "--lr-search", "fast"], "'lr_search'"),
    (["compare", *UNIT, "--batch-size", "0"], "'batch_size'"),
    (["compare", *UNIT, "--kendall-examples", "-1"], "'kendall_examples'"),
    (["compare", *UNIT, "--model", "{assets}/missing"], "not a model folder"),
    (["compare", *UNIT, "--model", "{assets}/not-a-model"], "no config.json"),
    (["compare", *UNIT, "--model", "{nan_model}"], "NaN or infinite weights in transformer.h.1.attn.c_attn.weight"),
    (["compare", *UNIT, "--model", "{inf_model}"], "NaN or infinite weights in transformer.h.1.attn.c_attn.weight"),
    (["compare", *UNIT, "--model", "{truncated_model}"], "truncated or corrupt"),
    (["compare", *UNIT, "--model", "{garbage_model}"], "truncated or corrupt"),
    (["compare", *UNIT, "--model", "{empty_model}"], "truncated or corrupt"),
    (["compare", *UNIT, "--out", "{assets}/file.txt"], "is a file, not a folder"),
    (["compare", *UNIT, "--out", "{assets}/file.txt/results"], "which is a file"),
    (["compare", *UNIT, "--out", "{ro}/results"], "cannot be written"),
    (["compare", "--config", "{assets}/missing.yaml"], "does not exist"),
    (["compare", "--config", "{assets}/bad.yaml"], "not valid YAML"),
    (["compare", "--config", "{assets}/list.yaml"], "must hold a mapping"),
    (["compare", "--config", "{assets}/extra.yaml"], "unknown key 'wings' (the keys are model, task,"),
    (["compare", "--config", "{assets}/typo.yaml"], "unknown key 'eval_sise' (did you mean 'eval_size'?): fix the key"),
    (["compare", "--config", "{assets}/typo-no-field.yaml", "--model", "m"], "unknown key 'eval_sise' (did you mean"),
    (["compare", "--config", "{assets}"], "is a folder: pass a YAML file"),
    (["compare", "--config", "{assets}/sweep-ok.yaml"], "is a sweep file (base, grid), not one unit's config: run it "
                                                         "with iclgd sweep"),
    (["compare", *UNIT, "--template", "-1"], "template -1 does not exist"),
    (["pretrain", "--config", "{assets}/pretrain-typo.yaml", "--out", "{work}/p"],
     "unknown key 'stpes' (did you mean 'steps'?)"),
    (["compare", "--task", "icc-heldout"], "'model'"),
    # --- demo ----------------------------------------------------------------------------------------------
    (["demo", "--eval-size", "-1"], "'eval_size'"),
    (["demo", "--eval-size", "0"], "'eval_size'"),
    (["demo", "--out", "{assets}/file.txt"], "is a file, not a folder"),
    (["demo", "--out", "{ro}/demo"], "cannot be written"),
    (["demo", "--model", "gpt2"], "no demo for model"),
    # --- sweep ---------------------------------------------------------------------------------------------
    (["sweep", "{assets}/missing.yaml"], "does not exist"),
    (["sweep", "{assets}/sweep-unknown-key.yaml"], "unknown sweep key"),
    (["sweep", "{assets}/sweep-missing-model.yaml"], "not a model folder"),
    (["sweep", "{assets}/sweep-no-base.yaml"], "needs a `base:`"),
    (["sweep", "{assets}/sweep-base-list.yaml"], "`base` must be a mapping"),
    (["sweep", "{assets}/sweep-grid-empty.yaml"], "lists no values for seed"),
    (["sweep", "{assets}/sweep-seed-bool.yaml"], "'seed': expected a number, got true"),
    (["sweep", "{assets}/sweep-ok.yaml", "--out", ""], "--out is empty"),
    (["compare", *UNIT, "--out", " "], "--out is empty"),
    (["sweep", "{assets}/sweep-grid-not-list.yaml"], "lists of values"),
    (["sweep", "{assets}/sweep-bad-task-late.yaml"], "icc-gpt2, task no-such-task, shots 4, seed 1): unknown task"),
    (["sweep", "{assets}/sweep-two-outs.yaml"], "one results folder"),
    (["sweep", "{assets}/sweep-run-typo.yaml"], "sweep-run-typo.yaml, `runs` entry 2: unknown key 'mehtods' (did "
                                                "you mean 'methods'?)"),
    (["sweep", "{assets}/sweep-base-typo.yaml"], "sweep-base-typo.yaml, `base`: unknown key 'eval_sise' (did you "
                                                 "mean 'eval_size'?)"),
    (["sweep", "{assets}/sweep-grid-typo.yaml"], "sweep-grid-typo.yaml, `grid`: unknown key 'sede' (did you mean "
                                                 "'seed'?)"),
    (["sweep", "{assets}/sweep-lr-inf.yaml"], "finite number"),
    (["sweep", "{assets}/sweep-cuda.yaml"], "CUDA is not available"),
    # found from the tokenizer and config before the first unit runs, not after it
    (["sweep", "{assets}/sweep-bos-late.yaml"], "BOS must be one token"),
    (["sweep", "{assets}/sweep-context-late.yaml"], "longer than the context"),
    (["sweep", "{assets}/sweep-ft-shots-late.yaml"], "ft_shots = 100000 demonstrations for FT"),
    (["sweep", "{assets}/sweep-orderings-late.yaml"], "30 distinct orderings asked for, but 4 demos have only 24"),
    (["sweep", "{assets}/sweep-layer-late.yaml"], "method 'wv:7-gd-label' trains layer 7, but the model has 2"),
    (["sweep", "{assets}/sweep-label-late.yaml"], "label word ' L1 L6' is 2 tokens"),
    (["sweep", "{assets}/sweep-ok.yaml", "--out", "{ro}/sweep"], "cannot be written"),
    (["sweep", "{assets}/sweep-ok.yaml", "--out", "{assets}/file.txt"], "is a file, not a folder"),
    (["sweep", "{assets}/sweep-ok.yaml", "--backend", "mpi"], "unknown sweep backend"),
    # --- icl-curve -----------------------------------------------------------------------------------------
    ([*CURVE, "--out", "{assets}/file.txt"], "is a file, not a folder"),
    ([*CURVE, "--out", "{assets}/file.txt/curve"], "which is a file"),
    ([*CURVE, "--out", "{ro}/curve"], "cannot be written"),
    ([*CURVE, "--k", "-1"], "must be >= 0"),
    ([*CURVE, "--untrained", "half"], "unknown untrained variant"),
    ([*CURVE, "--device", "cuda"], "CUDA is not available"),
    ([*CURVE, "--device", "nonsense"], "unknown device"),
    ([*CURVE, "--seeds", "0"], "Invalid value for '--seeds'"),
    ([*CURVE, "--eval-size", "0"], "Invalid value for '--eval-size'"),
    ([*CURVE, "--task", "no-such-task"], "unknown task"),
    ([*CURVE, "--model", "{nan_model}"], "NaN or infinite weights"),
    # --- pretrain ------------------------------------------------------------------------------------------
    ([*PRETRAIN, "--corpus", "nope"], "unknown corpus"),
    ([*PRETRAIN, "--steps", "0"], "'steps'"),
    ([*PRETRAIN, "--seed", "-1"], "'seed'"),
    ([*PRETRAIN, "--threads", "0"], "'threads'"),
    ([*PRETRAIN, "--keep-every", "0"], "'keep_every'"),
    ([*PRETRAIN, "--device", "cuda", "--out", "p"], "CUDA is not available"),
    ([*PRETRAIN, "--device", "nonsense"], "unknown device"),
    ([*PRETRAIN, "--config", "{assets}/lr-inf.yaml"], "finite number"),
    ([*PRETRAIN, "--out", "{assets}/file.txt"], "is a file, not a folder"),
    ([*PRETRAIN, "--out", "{assets}/file.txt/run"], "which is a file"),
    ([*PRETRAIN, "--out", "{ro}/run"], "cannot be written"),
    ([*PRETRAIN, "--out", "{assets}/foreign"], "not an iclgd pretrain run"),
    (["pretrain", "--config", "{assets}/tiny-pretrain.yaml", "--out", "{assets}/pretrain-run", "--threads", "2",
      "--no-progress"], "resume with --threads 1"),
    (["pretrain", "--config", "{assets}/tiny-pretrain.yaml", "--steps", "5", "--out", "{assets}/pretrain-run",
      "--no-progress"], "another config (steps 4 there, 5 now)"),
    # --- linreg --------------------------------------------------------------------------------------------
    (["linreg", "train", "--steps", "0", "--out", "l"], "'steps'"),
    (["linreg", "train", "--lr", "inf", "--out", "l"], "finite number"),
    (["linreg", "train", "--layers", "1", "--steps", "10", "--lr", "1e6", "--out", "l", "--quiet"],
     "linreg training diverged at step 2 (training loss inf) at lr 1e+06: lower --lr or set --grad-clip; nothing was"),
    (["linreg", "train", "--lr", "nan", "--out", "l"], "finite number"),
    (["linreg", "train", "--input-range", "inf", "--out", "l"], "finite number"),
    (["linreg", "train", "--seed", "-1", "--out", "l"], "'seed'"),
    (["linreg", "train", "--d", "0", "--out", "l"], "'d'"),
    (["linreg", "train", "--steps", "2"], "no output folder"),
    (["linreg", "train", "--steps", "2", "--out", "{assets}/file.txt"], "is a file, not a folder"),
    (["linreg", "train", "--steps", "2", "--out", "{assets}/file.txt/run"], "which is a file"),
    (["linreg", "train", "--steps", "2", "--out", "{ro}/run"], "cannot be written"),
    (["linreg", "compare"], "no run folder given"),
    (["linreg", "compare", "--run", "{assets}/missing"], "does not exist"),
    (["linreg", "compare", "--run", "{assets}/empty-dir"], "not a linreg run"),
    (["linreg", "compare", "--run", "{assets}/linreg-run", "--ood-tasks", "0"], "'ood_tasks'"),
    (["linreg", "ood", "--run", "{assets}/linreg-run", "--ood-tasks", "-3"], "'ood_tasks'"),
    (["linreg", "critique", "--run", "{assets}/linreg-run", "--orderings", "1"], "'orderings'"),
    (["linreg", "critique", "--run", "{assets}/linreg-run", "--variant-steps", "-1"], "'variant_steps'"),
    (["linreg", "critique", "--run", "{assets}/linreg-run", "--variant-steps", "0"], "'variant_steps'"),
    (["linreg", "critique", "--run", "{assets}/linreg-run", "--config", "{assets}/no-thresholds.yaml"],
     "thresholds and noise_scales must list at least one value"),
    (["linreg", "critique", "--run", "{assets}/linreg-n1"], "holds n = 1 example, which has one ordering"),
    (["linreg", "ood", "--run", "{assets}/linreg-run", "--config", "{assets}/ood-step-0.yaml"],
     "input_ranges is [start, stop, step] with 0 < start <= stop and step > 0"),
    (["linreg", "compare", "--run", "{assets}/linreg-run", "--config", "{assets}/ood-backwards.yaml"],
     "weight_scales is [start, stop, step]"),
    # --- report, sql, tasks, prepare-data ------------------------------------------------------------------
    (["report", "{assets}/missing"], "does not exist"),
    (["report", "{assets}/file.txt"], "is a file"),
    (["report", "{assets}/empty-dir"], "holds no iclgd results"),
    (["report", "{incomplete}"], "1 of its 2 planned units are not finished (sst2-"),
    (["report", "{incomplete}"], "no longer makes them, delete its plan (/"),
    (["report", "{results}", "--method", "foo"], "no FT method 'foo'"),
    (["report", "{results}", "--method", "lcgd", "--plot", "accuracy"], "they hold gd"),
    (["report", "{results}", "--plot", "violin"], "unknown plot"),
    (["report", "{results}", "--where", "lr = 0.05"], "--where 'lr = 0.05' is not a filter on the metrics columns"),
    (["report", "{results}", "--plot", "per-layer", "--plot-out", "{assets}/file.txt/plot"], "which is a file"),
    (["report", "{results}", "--plot", "per-layer", "--plot-out", "{ro}/plot"], "cannot be written"),
    (["report", "{results}", "--where", "nonsense ((("], "query failed"),
    (["report", "{results}", "--paper", "nosuch"], "choose one of dai2023, deutch2024, shen2024"),
    (["report", "{results}", "--paper", "shen2024"], "no Shen et al. results in"),
    (["sql", "{results}", "SELEC 1"], "query failed"),
    (["sql", "{results}", " "], "no query given"),
    (["sql", "{results}", "SELECT 1; SELECT 2"], "the query holds 2 statements: run one at a time"),
    (["report", "{results}/" + unit_id({"task": "sst2", "k": 4, "seed": 1})], "is one unit's folder, not a results"),
    (["reproduce", "nosuch", "--model", "icc-gpt2", "--out", "{work}/r"], "unknown paper 'nosuch': iclgd reproduces "
                                                                         "dai2023, deutch2024"),
    (["reproduce", "deutch2024", "--quick", "--out", "{work}/r"], "runs on a language model: pass --model"),
    (["reproduce", "vonoswald2023", "--quick", "--model", "icc-gpt2", "--out", "{work}/r"],
     "trains linear self-attention on linear regression on the CPU: it takes no --model; drop it"),
    (["reproduce", "vonoswald2023", "--tasks", "sst2", "--device", "cpu", "--out", "{work}/r"],
     "it takes no --tasks, --device; drop them"),
    (["reproduce", "vonoswald2023", "--quick", "--out", "{assets}/file.txt"], "is a file"),
    ([*REPRODUCE, "--tasks", "icc-heldout,no-such-task"], "no-such-task"),
    ([*REPRODUCE, "--tasks", "icc-heldout", "--model", "{assets}/missing"], "not a model folder"),
    ([*REPRODUCE, "--tasks", "icc-heldout", "--model", "{assets}/not-a-model"], "no config.json"),
    ([*REPRODUCE, "--tasks", "icc-heldout", "--model", "{assets}/bert"], "unsupported architecture 'bert'"),
    (["reproduce", "deutch2024", "--model", "icc-gpt2", "--tasks", "icc-heldout", "--out", "{assets}/file.txt"],
     "is a file"),
    (["reproduce", "deutch2024", "--model", "icc-gpt2", "--tasks", "icc-heldout", "--out", "{ro}/r"],
     "cannot be written"),
    (["reproduce", "deutch2024", "--quick", "--model", "icc-gpt2", "--tasks", "icc-heldout", "--out", "{results}"],
     "which is not one of this reproduction's"),  # a folder of other units: its report would pool them
    (["sql", "{assets}/missing", "SELECT 1"], "does not exist"),
    (["tasks", "{assets}/missing.yaml"], "missing.yaml"),
    (["prepare-data", "--task", "icc-heldout"], "needs --out"),
    # --- weights -------------------------------------------------------------------------------------------
    (["weights", "nosuch"], "No such command 'nosuch'"),
    (["weights", "sparsity"], "Missing option '--model'"),
    ([*SPARSITY, "--model", "{assets}/missing"], "not a model folder"),
    ([*SPARSITY, "--model", "{assets}/not-a-model"], "no config.json"),
    ([*SPARSITY, "--model", "{nan_model}"], "NaN or infinite weights"),
    ([*SPARSITY, "--threshold", "0"], "must be finite and > 0"),
    ([*SPARSITY, "--threshold=-1e-3"], "must be finite and > 0"),
    ([*SPARSITY, "--threshold", "inf"], "must be finite and > 0"),
    ([*SPARSITY, "--out", "{assets}/file.txt"], "is a file, not a folder"),
    ([*SPARSITY, "--out", "{assets}/file.txt/w"], "which is a file"),
    ([*SPARSITY, "--out", "{ro}/w"], "cannot be written"),
    ([*PERTURB, "--sigma=-0.01"], "must be finite and >= 0"),
    ([*PERTURB, "--sigma", "nan"], "must be finite and >= 0"),
    ([*PERTURB, "--model", "{assets}/missing"], "not a model folder"),
    ([*PERTURB, "--task", "no-such-task"], "unknown task"),
    ([*PERTURB, "-k", "0"], "k = 0"),
    ([*PERTURB, "-k", "9999"], "pool has only"),
    ([*PERTURB, "--weights", "mlp"], "unknown weight set"),
    ([*PERTURB, "--seed=-1"], "must be >= 0"),
    ([*PERTURB, "--device", "cuda"], "CUDA is not available"),
    ([*PERTURB, "--out", "{assets}/file.txt"], "is a file, not a folder"),
    ([*PERTURB, "--out", "{ro}/p"], "cannot be written"),
    ([*CHECKPOINTS, "--run", "{assets}/missing"], "does not exist"),
    ([*CHECKPOINTS, "--run", "{assets}/empty-dir"], "holds no checkpoints"),
    ([*CHECKPOINTS, "--run", "{assets}/pretrain-run"], "holds no checkpoints"),
    ([*CHECKPOINTS, "--run", "{assets}/empty-dir", "--out", "{ro}/c"], "cannot be written"),
    ([*CHECKPOINTS, "--run", "{assets}/empty-dir", "--reference", "middle"], "unknown reference checkpoint"),
    ([*CHECKPOINTS, "--run", "{assets}/empty-dir", "--threshold", "0"], "must be finite and > 0"),
]


def _command(argv: list[str]) -> str:
    if argv[0] in ("linreg", "weights"):
        return f"{argv[0]} {argv[1]}"
    return next((a for a in argv if not a.startswith("-")), "iclgd")


def _tree(folder: Path) -> dict[str, float | None]:
    """Every file with its mtime, every folder (whose mtime a writability probe may touch)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.stat().st_mtime for p in folder.rglob("*")}


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(argv)[:60] for argv, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, message, assets, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ICLGD_DATA_DIR", raising=False)
    argv = [a.format(**assets, work=tmp_path) for a in argv]
    before = _tree(Path(assets["assets"]))
    monkeypatch.setattr(sys, "argv", ["iclgd", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [], "the working folder is no longer empty"
    assert _tree(Path(assets["assets"])) == before, "an input was changed"


def test_the_table_covers_every_command():
    covered = {_command(argv) for argv, _ in CASES}
    commands = {"compare", "demo", "sweep", "icl-curve", "pretrain", "momentum", "emergence", "report", "reproduce",
                "sql", "tasks", "prepare-data",
                "linreg train", "linreg compare", "linreg ood", "linreg critique", "weights sparsity",
                "weights perturb", "weights checkpoints"}
    assert commands <= covered, commands - covered


def _iclgd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "iclgd", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_usage_errors_and_help_in_a_real_process(tmp_path):
    """The exit statuses a shell sees: usage errors 2 with one line, --help and a bare group 0."""
    for args in (["compare", "--shots", "abc"], ["nosuch"], ["compare", "--position"]):
        proc = _iclgd(*args, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and "--help)" in proc.stderr
    for args in (["--help"], ["compare", "--help"], [], ["linreg"]):
        proc = _iclgd(*args, cwd=tmp_path)
        assert proc.returncode == 0 and "Usage" in proc.stdout and proc.stderr == "", (args, proc.stderr)
    assert list(tmp_path.iterdir()) == []
