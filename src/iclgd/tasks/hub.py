"""The one place that talks to the Hugging Face hub: load a task's dataset and resolve its commit.

Online, the commit is resolved first (``HfApi.dataset_info``, one request with a short timeout, so that a
machine without network fails in about a second instead of datasets' minute of retries) and the data is
loaded at exactly that commit. Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), ``datasets`` serves its
cache and the commit is read from the cache path (``.../<owner>___<name>/<config>/<version>/<commit>/``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from iclgd.errors import UserError
from iclgd.tasks.task import Task

_TRUTHY = {"1", "ON", "YES", "TRUE"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
INFO_TIMEOUT_S = 10.0


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set (now, or when datasets was imported)."""
    if any(os.environ.get(name, "").upper() in _TRUTHY for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    import datasets.config

    return bool(datasets.config.HF_HUB_OFFLINE)


def _how_to_run_offline(task: Task, searched: str | Path | None, offline: bool = False) -> str:
    where = f"no snapshot {Path(searched) / task.name} was found; " if searched else ""
    cache = ("or load it once with network to warm the datasets cache" if offline
             else "or set HF_DATASETS_OFFLINE=1 to use a warm datasets cache")
    return (f"{where}run `iclgd prepare-data --task {task.name} --out DIR` on a machine with network and set "
            f"ICLGD_DATA_DIR=DIR (or pass --data-dir DIR, where the command has it), {cache}")


def commit_from_cache(dataset_dict) -> str | None:
    """The 40-hex commit in the cache paths of a loaded DatasetDict, if any."""
    for dataset in dataset_dict.values():
        for cache_file in dataset.cache_files:
            for part in reversed(Path(cache_file["filename"]).parts):
                if _COMMIT.match(part):
                    return part
    return None


def resolve_commit(task: Task, *, searched: str | Path | None = None) -> str:
    """The hub commit sha of the task's dataset at its pinned revision (or main); UserError when the hub
    cannot be reached or has no such dataset or revision."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().dataset_info(task.dataset_path, revision=task.revision, timeout=INFO_TIMEOUT_S)
    except GatedRepoError:
        raise UserError(f"task {task.name!r}: hub dataset {task.dataset_path} is gated; accept its terms on the hub "
                        "and log in (`hf auth login`)") from None
    except RevisionNotFoundError:
        raise UserError(f"task {task.name!r}: hub dataset {task.dataset_path} has no revision {task.revision!r}; "
                        "fix `revision` in the task file") from None
    except RepositoryNotFoundError:
        raise UserError(f"task {task.name!r}: there is no hub dataset {task.dataset_path!r}; fix dataset_path "
                        "(a hub id like nyu-mll/glue, or a local folder relative to the task file)") from None
    except Exception as err:  # no network, DNS, proxy, timeout: all mean the same to the user
        raise UserError(f"task {task.name!r}: cannot reach the Hugging Face hub for dataset {task.source} "
                        f"({type(err).__name__}: {' '.join(str(err).split())[:160]}); "
                        f"{_how_to_run_offline(task, searched)}") from None
    return info.sha


def fetch_hub(task: Task, *, searched: str | Path | None = None):
    """(DatasetDict, commit) of the task's hub dataset; UserError, in one line, when it cannot be had."""
    import datasets

    if hub_offline():
        try:
            dataset_dict = datasets.load_dataset(task.dataset_path, task.dataset_name, revision=task.revision)
        except Exception as err:
            how = _how_to_run_offline(task, searched, offline=True)
            raise UserError(f"task {task.name!r}: dataset {task.source} is not in the local datasets cache and "
                            f"offline mode is on ({type(err).__name__}); {how}") from None
        return dataset_dict, commit_from_cache(dataset_dict) or task.revision or "unknown"
    commit = resolve_commit(task, searched=searched)
    try:
        dataset_dict = datasets.load_dataset(task.dataset_path, task.dataset_name, revision=commit)
    except Exception as err:
        raise UserError(f"task {task.name!r}: loading hub dataset {task.source} failed "
                        f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    return dataset_dict, commit
