"""A task's rows: the demonstration pool and the evaluation split, as Examples, with the data's revision.

Where the rows come from, first match wins:
  1. a local task (``dataset_path`` a folder, or ``data_files``): its JSONL / JSON / CSV / Parquet files;
  2. a prepared snapshot ``<data_dir>/<task name>/`` (``iclgd prepare-data``; ``data_dir`` or env
     ICLGD_DATA_DIR), or the shipped fixtures (``fixtures=True``);
  3. the Hugging Face hub via ``datasets.load_dataset`` (see :mod:`iclgd.tasks.hub`).
Label names come from the label column's ClassLabel feature, from ``label_names`` in the task file, from a
text label column, or from ``label_name_field``; label words are looked up by NAME.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from iclgd.errors import UserError
from iclgd.tasks.task import DATA_SUFFIXES, Task
from iclgd.tasks.template import validate_template

FIXTURES_DIR = Path(__file__).parent / "fixtures"
SNAPSHOT_FILE = "snapshot.json"
DATA_DIR_ENV = "ICLGD_DATA_DIR"


@dataclass(frozen=True)
class Example:
    """One row: its text fields (raw, untouched) and its label NAME; ``row`` is its index in its split."""

    text_fields: dict[str, str | None] = field(hash=False)  # None: the row holds no text there
    label: str
    row: int = -1


@dataclass
class TaskData:
    """The demonstration pool and the WHOLE evaluation split (in split order; take the evaluation set
    with ``eval_subset(data.eval, task.eval_size)``), the data's revision, and the rows' text fields."""

    pool: list[Example]
    eval: list[Example]
    revision: str  # hub commit sha, "local:<sha256 of the files>", or what a snapshot recorded
    fields: tuple[str, ...] = ()
    source: str = ""  # where the rows were read from


# A split's columns as read from a file or a datasets.Dataset, plus the ClassLabel names per column.
Columns = dict[str, list]
ClassNames = dict[str, list[str]]


def class_names_from_metadata(metadata: dict | None) -> ClassNames:
    """ClassLabel names per column from the ``huggingface`` schema metadata that ``datasets`` writes into
    Parquet files (``{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}``)."""
    if not metadata or b"huggingface" not in metadata:
        return {}
    features = json.loads(metadata[b"huggingface"]).get("info", {}).get("features", {})
    return {column: list(feature["names"]) for column, feature in features.items()
            if isinstance(feature, dict) and feature.get("_type") == "ClassLabel"}


def read_file(path: Path) -> tuple[Columns, ClassNames]:
    """One data file's columns: Parquet (keeping ``datasets`` ClassLabel features), JSON lines, a JSON
    array of objects, or CSV (every value a string)."""
    suffix = path.suffix.lower()
    try:
        return _read_file(path, suffix)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it "
                        "as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _read_file(path: Path, suffix: str) -> tuple[Columns, ClassNames]:
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"{path}: not a readable Parquet file ({first_line}); is it truncated? write it "
                            "again") from None
        return table.to_pydict(), class_names_from_metadata(table.schema.metadata)
    if suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first record
        try:
            if text.lstrip().startswith("["):
                records = json.loads(text)
            else:
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON lines ({err}); write one JSON object per line") from None
        if not all(isinstance(r, dict) for r in records):
            raise UserError(f"{path}: every record must be a JSON object with one key per field")
        return _records_to_columns(records), {}
    if suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark is no header
            records = list(csv.DictReader(f))
        for line, record in enumerate(records, start=2):
            if None in record:  # DictReader's key for the fields past the header's
                raise UserError(f"{path}: line {line} has more fields than the header; quote a field that holds a "
                                "comma (\"fine, really\")")
        return _records_to_columns(records), {}
    raise UserError(f"{path}: unsupported data file type {suffix!r}; use one of {', '.join(DATA_SUFFIXES)}")


def _records_to_columns(records: list[dict]) -> Columns:
    names = list(dict.fromkeys(key for record in records for key in record))
    return {name: [record.get(name) for record in records] for name in names}


def split_files(folder: Path, split: str, data_files: dict[str, tuple[str, ...]] | None = None) -> list[Path]:
    """The files holding ``split``: ``data_files[split]`` (relative to ``folder``) if given, else
    ``<split>.<suffix>``, else shards ``<split>-*.<suffix>`` or ``<split>/*.<suffix>``."""
    if data_files and split in data_files:
        files = [(folder / Path(name).expanduser()).resolve() for name in data_files[split]]
        for file in files:
            if not file.is_file():
                raise UserError(f"data file {file} for split {split!r} does not exist")
        return files
    if not folder.is_dir():
        hint = " (a single file cannot hold both the pool and the evaluation split)" if folder.is_file() else ""
        raise UserError(f"local dataset folder {folder} does not exist{hint}; put one file per split in a folder "
                        "(train.jsonl, test.jsonl) or name the files per split under data_files")
    for suffix in DATA_SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            return [folder / f"{split}{suffix}"]
    for suffix in DATA_SUFFIXES:
        shards = sorted(folder.glob(f"{split}-*{suffix}")) or sorted(folder.glob(f"{split}/*{suffix}"))
        if shards:
            return shards
    present = sorted(p.name for p in folder.iterdir() if p.suffix in DATA_SUFFIXES)
    raise UserError(f"no file for split {split!r} in {folder} (looked for {split}.parquet/.jsonl/.json/.csv and "
                    f"shards {split}-*.*; found: {', '.join(present) or 'none'}); rename it or map it under data_files")


def read_split(files: list[Path]) -> tuple[Columns, ClassNames]:
    """The columns of a split stored in one or more files (concatenated in the order given)."""
    columns: Columns = {}
    class_names: ClassNames = {}
    for file in files:
        part, names = read_file(file)
        if not any(part.values()):  # else the first complaint would be a missing label column
            raise UserError(f"data file {file} is empty (no rows): fill it, or point the task at the right file")
        if columns and set(part) != set(columns):  # JSON objects are unordered: the same keys are the same columns
            raise UserError(f"{file}: columns {list(part)} differ from those of the split's other files "
                            f"{list(columns)}")
        for name, values in part.items():
            columns.setdefault(name, []).extend(values)
        class_names.update(names)
    return columns, class_names


def files_revision(files: list[Path]) -> str:
    """'local:' + sha256 over the bytes of the files, in the order given."""
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"local:{digest.hexdigest()}"


def _label_name(value, names: list[str] | tuple[str, ...] | None, words: dict[str, str]) -> str | None:
    """A row's label NAME from its label value; None when the row has no label (None, '', or -1 where -1 is not a
    label: the hub's convention for a test split without labels, unless doc_to_choice maps "-1")."""
    if value is None or value == "" or ((value == -1 or value == "-1") and "-1" not in words):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if names is not None:
        if isinstance(value, str) and value.isdigit() and any(name.isdigit() for name in names):
            # a CSV holds every value as text: "3" could be the name "3" or index 3 (JSON lines and Parquet say which)
            raise UserError(f"label value {value!r} could be a label name or an index into the label names "
                            f"{list(names)}, which are numbers too: store the labels as integers (JSON lines, Parquet) "
                            "or as names in a label_name_field column, or give the labels names that are words")
        if isinstance(value, str) and value in names:
            return value
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit() and value not in words):
            index = int(value)
            if not 0 <= index < len(names):
                raise UserError(f"label index {index} is outside the label names {list(names)}")
            return names[index]
    return value if isinstance(value, str) else str(value)


def to_examples(task: Task, columns: Columns, class_names: ClassNames, split: str, where: str) -> list[Example]:
    """Examples of one split: text fields = every column but the label column(s), label = the label NAME."""
    label_column = task.label_name_field or task.label_field
    if label_column not in columns:
        raise UserError(f"task {task.name!r}: split {split!r} of {where} has no column {label_column!r} "
                        f"(columns: {', '.join(columns)}); set label_field / label_name_field in the task file")
    names = None if task.label_name_field else class_names.get(task.label_field, task.label_names)
    if names is not None:
        unknown = [name for name in task.label_words if name not in names]
        if unknown:
            raise UserError(f"task {task.name!r}: doc_to_choice names {unknown} are not label names of column "
                            f"{task.label_field!r} (names: {', '.join(names)}); key label words by these names")
    text_columns = [c for c in columns if c not in (task.label_field, task.label_name_field)]
    labels = [_label_name(value, names, task.label_words) for value in columns[label_column]]
    unlabelled = sum(label is None for label in labels)
    if unlabelled:
        raise UserError(f"task {task.name!r}: {unlabelled} of {len(labels)} rows of split {split!r} of {where} have "
                        "no label (-1 or empty); use a labelled split for the pool and the evaluation (where -1 is a "
                        "real label, map \"-1\" in doc_to_choice)")
    unmapped = sorted({label for label in labels if label not in task.label_words})
    if unmapped:
        floats = all(label.endswith(".0") and label[:-2].lstrip("-").isdigit() for label in unmapped)
        hint = " (the labels are floats, as pandas writes a column with NaN: store them as integers)" if floats else ""
        raise UserError(f"task {task.name!r}: label names {unmapped} in split {split!r} of {where} have no label word; "
                        f"doc_to_choice maps {list(task.label_words)}: add them{hint}")
    examples = []
    for i, label in enumerate(labels):
        text_fields = {c: _text(columns[c][i]) for c in text_columns}
        examples.append(Example(text_fields=text_fields, label=label, row=i))
    return examples


def _text(value) -> str | None:
    """A field's raw text (never stripped or normalised); None where the row holds none (missing, null, NaN, empty or
    blank, a list or an object), which a template that fills the field refuses
    (:func:`iclgd.tasks.template.render_input`): a CSV's empty cell is no text, as an empty label cell is no label."""
    if isinstance(value, str):
        return value if value.strip() else None
    if value is None or isinstance(value, (list, dict)) or isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _check_templates(task: Task, fields: tuple[str, ...]) -> None:
    for i, template in enumerate(task.templates):
        validate_template(template, fields, where=f"task {task.name!r}, template {i}",
                          label_fields=(task.label_field, task.label_name_field))


def _task_data(task: Task, splits: dict[str, tuple[Columns, ClassNames]], revision: str, where: str) -> TaskData:
    examples = {s: to_examples(task, cols, names, s, where) for s, (cols, names) in splits.items()}
    pool, evaluation = examples[task.training_split], examples[task.eval_split]
    if not pool or not evaluation:
        empty = task.training_split if not pool else task.eval_split
        raise UserError(f"task {task.name!r}: split {empty!r} of {where} has no rows")
    fields = tuple(f for f in pool[0].text_fields if f in evaluation[0].text_fields)
    _check_templates(task, fields)
    return TaskData(pool=pool, eval=evaluation, revision=revision, fields=fields, source=where)


def read_snapshot(folder: Path) -> dict:
    """The JSON that ``prepare-data`` writes beside a snapshot's Parquet files ({} if absent)."""
    path = folder / SNAPSHOT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _load_folder(task: Task, folder: Path, data_files=None, snapshot: bool = False) -> TaskData:
    files = {split: split_files(folder, split, data_files) for split in task.splits}
    revision = files_revision([f for split in task.splits for f in files[split]])
    if snapshot:
        recorded = read_snapshot(folder)
        for key in ("dataset_path", "dataset_name"):
            if key in recorded and recorded[key] != getattr(task, key):
                raise UserError(f"snapshot {folder} holds {key} {recorded[key]!r} but task {task.name!r} reads "
                                f"{getattr(task, key)!r}; run `iclgd prepare-data --task {task.name}` again")
        if task.revision and recorded.get("revision") and not recorded["revision"].startswith(task.revision):
            raise UserError(f"snapshot {folder} is of revision {recorded['revision']} but task {task.name!r} pins "
                            f"{task.revision}; run `iclgd prepare-data --task {task.name}` again")
        revision = recorded.get("revision", revision)
    return _task_data(task, {split: read_split(files[split]) for split in task.splits}, revision, str(folder))


def snapshot_folder(task: Task, data_dir: str | Path | None, fixtures: bool = False) -> Path | None:
    """``<data_dir>/<task name>`` (data_dir, else env ICLGD_DATA_DIR, else the fixtures with fixtures=True)
    if it exists; None otherwise."""
    if fixtures:
        folder = FIXTURES_DIR / task.name
        if not folder.is_dir():
            known = sorted(p.name for p in FIXTURES_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
            raise UserError(f"no fixtures for task {task.name!r}; fixtures exist for: {', '.join(known)}")
        return folder
    data_dir = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    folder = Path(data_dir).expanduser() / task.name
    return folder if folder.is_dir() else None


def load_splits(task: Task, *, data_dir: str | Path | None = None, fixtures: bool = False) -> TaskData:
    """The task's demonstration pool and evaluation split (see the module docstring for the sources)."""
    if task.is_local:
        return _load_folder(task, task.local_path, task.data_files)
    folder = snapshot_folder(task, data_dir, fixtures)
    if folder is not None:
        return _load_folder(task, folder, snapshot=True)
    from iclgd.tasks.hub import fetch_hub

    searched = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    dataset_dict, revision = fetch_hub(task, searched=searched)
    splits = {}
    for split in task.splits:
        if split not in dataset_dict:
            raise UserError(f"task {task.name!r}: hub dataset {task.source} has no split {split!r} "
                            f"(splits: {', '.join(dataset_dict)}); fix training_split / the evaluation split")
        dataset = dataset_dict[split]
        names = {c: list(f.names) for c, f in dataset.features.items() if type(f).__name__ == "ClassLabel"}
        splits[split] = (dataset.to_dict(), names)
    return _task_data(task, splits, revision, f"hub:{task.source}@{revision}")
