"""The evaluation tasks of the pretraining corpora, written as iclgd task files (YAML + local JSONL).

    icc-heldout                  a held-out mapping (no prior): zero-shot at chance, only ICL can solve them
    icc-exemplars-heldout        icc-exemplars: demos from 4 exemplars of each input, queries from the other 12 (72
                                 distinct query tokens, none ever a demo); the mapping is not held out of pretraining
    icc-prior                    inputs with a prior learnt in the weights: zero-shot above chance
    icc-prior-flipped            the same inputs with their prior labels swapped: the context must override
    ginc-l3, ginc-l5             GINC prompts (Xie et al. 2022) of one in-distribution concept
Rows are seeded and regenerated exactly by ``write_task_files()`` (a test checks the shipped files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from iclgd.synthetic.pretrain.ginc import GINC
from iclgd.synthetic.pretrain.icc import ICC, ICCExemplars

TASKS_PACKAGE = Path(__file__).resolve().parents[2] / "tasks"
BUILTIN_DIR = TASKS_PACKAGE / "builtin"
DATA_DIR = TASKS_PACKAGE / "data"


@dataclass(frozen=True)
class TaskFile:
    name: str
    description: str
    label_words: dict[str, str]  # label name -> label word
    separator: str
    train: list[dict[str, str]]
    test: list[dict[str, str]]


def mapping_rows(mapping: dict[str, str], n: int, seed: int, balanced: bool) -> list[dict[str, str]]:
    """n rows {"text": input, "label": label name}: inputs drawn uniformly (seeded), or each input n / len times
    (and each label equally often) then shuffled (balanced)."""
    rng = np.random.default_rng(seed)
    inputs = list(mapping)
    if balanced:  # inputs interleaved by label, so the n % len(inputs) extra rows also split evenly
        labels = list(dict.fromkeys(mapping.values()))
        rank = {x: [y for y in inputs if mapping[y] == mapping[x]].index(x) for x in inputs}
        inputs.sort(key=lambda x: (rank[x], labels.index(mapping[x])))
        picks = rng.permutation(np.resize(np.arange(len(inputs)), n))
    else:
        picks = rng.integers(0, len(inputs), size=n)
    return [{"text": inputs[i], "label": mapping[inputs[i]]} for i in picks]


def icc_prior_mapping(corpus: ICC, labels: tuple[int, int] = (0, 1), per_label: int = 3,
                      flipped: bool = False) -> dict[str, str]:
    """Prior inputs of two prior labels (per_label each) -> their prior label word (or the other one)."""
    mapping = {}
    for position, label in enumerate(labels):
        target = labels[1 - position] if flipped else label
        members = np.arange(label, corpus.n_prior_inputs, corpus.n_prior_labels)[:per_label]
        mapping.update({f"x{i}": f"L{target}" for i in members})
    return mapping


def icc_task(name: str, mapping: dict[str, str], description: str, seed: int,
             queries: dict[str, str] | None = None, n_test: int = 200) -> TaskFile:
    """Train rows (the demo pool) from ``mapping``, test rows from ``queries`` (default: the same mapping)."""
    queries = mapping if queries is None else queries
    words = {label: f" {label}" for label in sorted(set(mapping.values()), key=lambda w: int(w[1:]))}
    return TaskFile(name, description, words, "\n", mapping_rows(mapping, 64, seed, balanced=False),
                    mapping_rows(queries, n_test, seed + 1, balanced=True))


def ginc_task(name: str, ginc: GINC, concept: int, start_slot: int, prompt_length: int, seed: int) -> TaskFile:
    words = {symbol: f" {symbol}" for symbol in ginc.symbols}
    description = (f"GINC prompts (Xie et al. 2022): concept {concept}, start slot {start_slot}, prompt length "
                   f"{prompt_length}; demos are sampled examples, the test label is the Bayes-optimal next symbol")
    return TaskFile(name, description, words, " /",
                    ginc.prompt_rows(concept, start_slot, prompt_length, 256, seed, bayes_label=False),
                    ginc.prompt_rows(concept, start_slot, prompt_length, 500, seed + 1, bayes_label=True))


def builtin_task_files() -> list[TaskFile]:
    """Every shipped pretraining task, from the default corpora."""
    icc, exemplars, ginc = ICC(), ICCExemplars(), GINC()
    tasks = [icc_task(name, mapping, "in-context classification, a mapping held out from pretraining (no prior)",
                      seed=10 + i) for i, (name, mapping) in enumerate(icc.heldout.items())]
    for i, name in enumerate(exemplars.heldout):
        demos, queries = exemplars.heldout_words(name)
        rest = exemplars.exemplars_per_input - exemplars.demo_exemplars
        tasks.append(icc_task(name, demos, "in-context classification on the icc-exemplars corpus: demos from "
                              f"{exemplars.demo_exemplars} exemplars of each input, queries from the other {rest} "
                              "(never a demo); the mapping is drawn in pretraining like any other, so zero-shot is "
                              "at chance", seed=40 + i, queries=queries, n_test=3 * len(queries)))
    tasks.append(icc_task("icc-prior", icc_prior_mapping(icc), "in-context classification, inputs whose prior "
                          "labels the model learnt in its weights", seed=20))
    tasks.append(icc_task("icc-prior-flipped", icc_prior_mapping(icc, flipped=True), "in-context classification, "
                          "prior inputs with their prior labels swapped", seed=22))
    tasks.append(ginc_task("ginc-l3", ginc, concept=0, start_slot=1, prompt_length=3, seed=30))
    tasks.append(ginc_task("ginc-l5", ginc, concept=0, start_slot=1, prompt_length=5, seed=32))
    return tasks


def task_yaml(task: TaskFile) -> str:
    body = {
        "task": task.name,
        "description": task.description,
        "dataset_path": f"../data/{task.name}",
        "training_split": "train",
        "test_split": "test",
        "doc_to_text": "{text}",
        "label_field": "label",
        "doc_to_choice": task.label_words,
        "eval_size": len(task.test),
    }
    header = ("# Written by iclgd.synthetic.pretrain.task_files.write_task_files(); evaluation task of the "
              "pretraining corpora.\n")
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=1000)
    # a JSON string is a YAML double-quoted string
    separator = f"separator: {json.dumps(task.separator)}  # between demonstrations\n"
    return header + text.replace("eval_size:", separator + "eval_size:", 1)


def jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def task_file_contents(task: TaskFile) -> dict[Path, str]:
    """Relative path (under iclgd/tasks/) -> text of every file of ``task``."""
    return {
        Path("builtin") / f"{task.name}.yaml": task_yaml(task),
        Path("data") / task.name / "train.jsonl": jsonl(task.train),
        Path("data") / task.name / "test.jsonl": jsonl(task.test),
    }


def write_task_files(root: Path = TASKS_PACKAGE) -> list[Path]:
    """(Re)write the shipped task files under ``root`` (iclgd/tasks by default)."""
    written = []
    for task in builtin_task_files():
        for relative, text in task_file_contents(task).items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
