"""`prepare-data`: snapshot a hub task's splits to local Parquet, for machines without network.

Layout, read back by :func:`iclgd.tasks.loading.load_splits` with ``data_dir=<out>``:

    <out>/<task name>/<split>.parquet     one per split the task reads, with the datasets features
                                          (ClassLabel names) in the Parquet schema metadata
    <out>/<task name>/snapshot.json       {"task", "dataset_path", "dataset_name", "revision": <commit>,
                                           "splits": {split: {"rows", "file", "sha256"}}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from iclgd.errors import UserError
from iclgd.runs import atomic_folder
from iclgd.tasks.loading import SNAPSHOT_FILE
from iclgd.tasks.task import Task

if TYPE_CHECKING:
    import datasets


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_snapshot(task: Task, dataset_dict: datasets.DatasetDict, revision: str, out_dir: str | Path) -> Path:
    """Write the task's splits of ``dataset_dict`` (a ``datasets.DatasetDict``) and the snapshot JSON to
    ``<out_dir>/<task name>/``, atomically (a temporary folder renamed into place). Returns that folder."""
    import datasets

    missing = [split for split in task.splits if split not in dataset_dict]
    if missing:
        raise UserError(f"task {task.name!r}: dataset {task.source} has no split(s) {', '.join(missing)} "
                        f"(splits: {', '.join(dataset_dict)}); fix the task file's splits")
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / task.name
    with atomic_folder(final, replace=True) as partial:
        splits = {}
        bars_were_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            for split in task.splits:
                file = partial / f"{split}.parquet"
                dataset_dict[split].to_parquet(str(file))
                splits[split] = {"rows": dataset_dict[split].num_rows, "file": file.name, "sha256": _sha256(file)}
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        record = {"task": task.name, "dataset_path": task.dataset_path, "dataset_name": task.dataset_name,
                  "revision": revision, "splits": splits}
        (partial / SNAPSHOT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return final


def prepare_data(task: Task, out_dir: str | Path, *, fetch: Callable | None = None) -> Path:
    """Snapshot a hub task to ``<out_dir>/<task name>/``. ``fetch(task) -> (DatasetDict, commit)`` defaults
    to :func:`iclgd.tasks.hub.fetch_hub` (the only line that needs the network)."""
    if task.is_local:
        raise UserError(f"task {task.name!r} reads local data from {task.local_path}; it needs no prepare-data")
    if fetch is None:
        from iclgd.tasks.hub import fetch_hub as fetch
    dataset_dict, revision = fetch(task)
    return write_snapshot(task, dataset_dict, revision, out_dir)
