"""Task files: a classification task described in the keys lm-evaluation-harness uses.

    task: sst2                         # the name
    dataset_path: nyu-mll/glue         # a hub dataset id, or a local folder (relative to this file)
    dataset_name: sst2                 # hub config (optional)
    revision: <commit>                 # optional pin of the hub commit
    training_split: train              # the demonstration pool
    validation_split: validation       # the evaluation split (or test_split / eval_split)
    doc_to_text: "Sentence: {sentence} Label:"   # or templates: [..., ...] (index 0 is the default)
    label_field: label                 # label column (default "label")
    label_name_field: label_text       # optional: a column holding each row's label name
    label_names: [neg, pos]            # optional: names of integer labels that have no ClassLabel feature
    doc_to_choice: {negative: " Negative", positive: " Positive"}  # label NAME -> label word, candidate order
    data_files: {train: a.jsonl, test: b.csv}     # optional, local data: split -> file(s)
    separator: "\\n"                    # optional, not empty; default from the model family
    bos: "<s>"                         # optional; default from the model family ("" = no BOS)
    eval_size: 2000                    # evaluation rows (split permuted with seed 1, first eval_size)
    metadata: {source: "vadersentiment 3.3.2 (PyPI)", license: MIT}  # optional: where the rows come from, licence

Built-in task files live in ``iclgd/tasks/builtin/``; any other file is given by its path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from iclgd.errors import UserError
from iclgd.tasks.template import template_fields

BUILTIN_DIR = Path(__file__).parent / "builtin"
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")

_REQUIRED = ("task", "training_split", "doc_to_choice")
_OPTIONAL = ("dataset_path", "dataset_name", "revision", "validation_split", "test_split", "eval_split",
             "doc_to_text", "templates", "label_field", "label_name_field", "label_names", "data_files",
             "separator", "bos", "eval_size", "description", "metadata")
# lm-evaluation-harness keys that mean nothing here (a unit computes every metric; metric_list selects none).
_IGNORED = ("output_type", "tag", "metric_list")


@dataclass(frozen=True)
class Task:
    """A parsed task file. ``label_words`` maps label name -> label word, in candidate order."""

    name: str
    dataset_path: str | None
    dataset_name: str | None
    revision: str | None
    training_split: str
    eval_split: str
    templates: tuple[str, ...]
    label_words: dict[str, str] = field(hash=False)
    separator: str | None = None
    bos: str | None = None
    eval_size: int = 2000
    source_file: Path | None = None
    label_field: str = "label"
    label_name_field: str | None = None
    label_names: tuple[str, ...] | None = None
    data_files: dict[str, tuple[str, ...]] | None = field(default=None, hash=False)
    local_path: Path | None = None  # resolved local data folder; None for a hub dataset
    description: str = ""
    origin: str = ""  # metadata.source: the package the local rows were built from, e.g. 'vadersentiment 3.3.2'
    license: str = ""  # metadata.license

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names in candidate order."""
        return tuple(self.label_words)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the task reads: the demonstration pool, then the evaluation split."""
        return tuple(dict.fromkeys((self.training_split, self.eval_split)))

    @property
    def source(self) -> str:
        """Where the rows come from, for tables: 'nyu-mll/glue (sst2)' or the local folder."""
        if self.local_path is not None:
            return str(self.local_path)
        config = f" ({self.dataset_name})" if self.dataset_name else ""
        pin = f" @ {self.revision}" if self.revision else ""
        return f"{self.dataset_path}{config}{pin}"

    def template(self, which: int | str | None = None) -> str:
        """Template ``which``: an index into ``templates`` (None: 0), or a template string of one's own."""
        if which is None:
            return self.templates[0]
        if isinstance(which, str):
            template_fields(which, where=f"task {self.name!r}", example_field=template_fields(self.templates[0])[0])
            return which
        if not 0 <= which < len(self.templates):
            raise UserError(f"task {self.name!r} has {len(self.templates)} template(s) (0..{len(self.templates) - 1}); "
                            f"template {which} does not exist: pick an index in range or give a template string")
        return self.templates[which]


def _where(path: Path) -> str:
    return f"task file {path}"


def _string(raw: dict, key: str, path: Path, default=None) -> str | None:
    value = raw.get(key, default)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and key in ("dataset_name", "revision"):
        return str(value)
    raise UserError(f"{_where(path)}: {key} must be a string, got {value!r}")


def _separator(raw: dict, path: Path) -> str | None:
    value = _string(raw, "separator", path)
    if value == "":
        raise UserError(f"{_where(path)}: separator is empty: demos need text between them; leave the key out for "
                        "the model family's default, or give one (e.g. \" \" or \"\\n\")")
    return value


def _label_words(raw: dict, path: Path) -> dict[str, str]:
    choices = raw["doc_to_choice"]
    if not isinstance(choices, dict) or not choices:
        raise UserError(f"{_where(path)}: doc_to_choice must map each label NAME to its label word, "
                        "e.g. {negative: \" Negative\", positive: \" Positive\"}")
    words: dict[str, str] = {}
    for name, word in choices.items():
        if isinstance(name, bool):  # YAML 1.1 reads bare yes/no/true/false as booleans
            raise UserError(f"{_where(path)}: doc_to_choice key {name!r} was read as a boolean; quote the label "
                            "name, e.g. \"no\": \" No\"")
        if not isinstance(word, str) or not word:
            raise UserError(f"{_where(path)}: label word for {name!r} must be a non-empty string, got {word!r}")
        words[str(name)] = word
    repeated = sorted({w for w in words.values() if list(words.values()).count(w) > 1})
    if repeated:
        raise UserError(f"{_where(path)}: label words {repeated} are used for more than one label; "
                        "each label needs its own word")
    return words


def _templates(raw: dict, path: Path) -> tuple[str, ...]:
    if "doc_to_text" in raw and "templates" in raw:
        raise UserError(f"{_where(path)}: give either doc_to_text (one template) or templates (a list), not both")
    if "templates" in raw:
        templates = raw["templates"]
        if not isinstance(templates, list) or not templates:
            raise UserError(f"{_where(path)}: templates must be a non-empty list of template strings")
    elif "doc_to_text" in raw:
        templates = [raw["doc_to_text"]]
    else:
        raise UserError(f"{_where(path)}: missing doc_to_text (a template over the row's fields, "
                        "e.g. 'Sentence: {sentence} Label:') or templates (a list of them)")
    for i, template in enumerate(templates):
        if not isinstance(template, str):
            raise UserError(f"{_where(path)}: template {i} must be a string, got {template!r}")
        template_fields(template, where=f"{_where(path)}, template {i}")
    return tuple(templates)


def _eval_split(raw: dict, path: Path) -> str:
    # lm-evaluation-harness evaluates on test_split when present, else validation_split.
    for key in ("eval_split", "test_split", "validation_split"):
        if raw.get(key) is not None:
            return str(_string(raw, key, path))
    raise UserError(f"{_where(path)}: missing the evaluation split: validation_split, test_split or eval_split")


def _data_files(raw: dict, path: Path) -> dict[str, tuple[str, ...]] | None:
    files = raw.get("data_files")
    if files is None:
        return None
    if not isinstance(files, dict):
        raise UserError(f"{_where(path)}: data_files must map split names to a file or a list of files, "
                        "e.g. {train: train.jsonl, test: test.jsonl}")
    out = {}
    for split, names in files.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{_where(path)}: data_files[{split!r}] must be a file name or a list of file names")
        out[str(split)] = tuple(names)
    return out


def _local_path(dataset_path: str | None, data_files: dict | None, folder: Path) -> Path | None:
    """The local data folder, or None for a hub dataset id.

    Local when ``data_files`` is given, or ``dataset_path`` exists relative to the task file's folder, or
    it is written like a path (starts with '.', '/' or '~', or ends in a data file suffix)."""
    if dataset_path is None:
        return folder.resolve() if data_files is not None else None
    candidate = (folder / Path(dataset_path).expanduser()).resolve()
    looks_local = dataset_path.startswith((".", "/", "~")) or dataset_path.endswith(DATA_SUFFIXES)
    if data_files is not None or candidate.exists() or looks_local:
        return candidate
    return None


def _metadata(raw: dict, key: str) -> str:
    # lm-evaluation-harness's free-form `metadata` mapping; iclgd reads `source` and `license` from it
    metadata = raw.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return str(value) if value is not None else ""


def parse_task(raw: object, path: Path) -> Task:
    """A Task from a task file's parsed YAML; UserError naming the file and the key on bad input."""
    if not isinstance(raw, dict):
        raise UserError(f"{_where(path)}: expected a mapping of keys (task, dataset_path, ...), "
                        f"got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _REQUIRED + _OPTIONAL + _IGNORED)
    if unknown:
        raise UserError(f"{_where(path)}: unknown key(s) {', '.join(unknown)}; "
                        f"known keys: {', '.join(_REQUIRED + _OPTIONAL)}")
    missing = [k for k in _REQUIRED if raw.get(k) is None]
    if missing:
        raise UserError(f"{_where(path)}: missing key(s) {', '.join(missing)}")
    if raw.get("dataset_path") is None and raw.get("data_files") is None:
        raise UserError(f"{_where(path)}: missing dataset_path (a hub dataset id or a local folder) or data_files")
    label_names = raw.get("label_names")
    if label_names is not None and not (isinstance(label_names, list) and all(isinstance(n, str) for n in label_names)):
        raise UserError(f"{_where(path)}: label_names must be a list of names in label-index order")
    eval_size = raw.get("eval_size", 2000)
    if not isinstance(eval_size, int) or isinstance(eval_size, bool) or eval_size < 1:
        raise UserError(f"{_where(path)}: eval_size must be a positive integer, got {eval_size!r}")
    dataset_path = _string(raw, "dataset_path", path)
    data_files = _data_files(raw, path)
    training_split, eval_split = str(_string(raw, "training_split", path)), _eval_split(raw, path)
    same_files = (data_files is not None and training_split != eval_split
                  and data_files.get(training_split) is not None
                  and set(data_files.get(training_split)) == set(data_files.get(eval_split) or ()))
    if training_split == eval_split or same_files:
        what = f"split {training_split!r}" if training_split == eval_split else f"files {list(data_files[eval_split])}"
        raise UserError(f"{_where(path)}: the demonstration pool and the evaluation split are the same {what}: the "
                        "demos and the lr search's held-out rows would be eval rows; give the eval rows their own "
                        "split (e.g. data_files: {train: train.jsonl, test: test.jsonl})")
    return Task(
        name=str(_string(raw, "task", path)),
        dataset_path=dataset_path,
        dataset_name=_string(raw, "dataset_name", path),
        revision=_string(raw, "revision", path),
        training_split=training_split,
        eval_split=eval_split,
        templates=_templates(raw, path),
        label_words=_label_words(raw, path),
        separator=_separator(raw, path),
        bos=_string(raw, "bos", path),
        eval_size=eval_size,
        source_file=path,
        label_field=str(_string(raw, "label_field", path, "label")),
        label_name_field=_string(raw, "label_name_field", path),
        label_names=tuple(label_names) if label_names is not None else None,
        data_files=data_files,
        local_path=_local_path(dataset_path, data_files, path.parent),
        description=_string(raw, "description", path, "") or "",
        origin=_metadata(raw, "source"),
        license=_metadata(raw, "license"),
    )


def read_task_file(path: str | Path) -> Task:
    """Parse one task file (YAML)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"task file {path} does not exist; give an existing .yaml file or a built-in task name "
                        "(`iclgd tasks` lists them)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        raise UserError(f"{_where(path)}: not valid YAML ({detail})") from None
    return parse_task(raw, path)


def list_tasks() -> list[Task]:
    """The built-in tasks, sorted by name."""
    return sorted((read_task_file(p) for p in BUILTIN_DIR.glob("*.yaml")), key=lambda task: task.name)


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name (``sst2``), or any task file by path (``my_tasks/foo.yaml``)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return read_task_file(name_or_path)
    tasks = {task.name: task for task in list_tasks()}
    if text in tasks:
        return tasks[text]
    raise UserError(f"unknown task {text!r}; known tasks: {', '.join(tasks)}; "
                    "a path to a task file (.yaml) also works")


def task_name(name_or_path: str | Path) -> str:
    """A task's own name (a task file's ``task:``, not its file name), for titles and default folders."""
    return load_task(name_or_path).name
