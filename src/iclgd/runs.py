"""Run folders: one convention for everything iclgd writes, and the atomic writers that keep it.

1. Nothing is half written. A file goes to a temporary sibling and is renamed over its target
   (:func:`atomic_file`); a folder that is one result (a compare unit, a linreg run, a converted model, a data
   snapshot) is written in a temporary sibling and renamed into place once complete (:func:`atomic_folder`). A
   reader sees the old version or the new one, never a mix. Temporary siblings are named
   ``.tmp-<name>-<host>-<pid>``; what a killed process left is removed by the next writer in that folder
   (:func:`remove_stale`).
2. Rerunning a command is how work resumes. What is complete is skipped (a sweep skips its finished units, a
   pretrain run that finished says so), what is partial is finished (a pretrain run continues from its last
   checkpoint; a unit killed midway is recomputed), and a folder that holds a run of another config is refused
   with one line, never mixed with it (pretrain, linreg train without ``--overwrite``). Commands whose result is
   one small table or figure (icl-curve, linreg compare/ood/critique, report plots) recompute it and replace their
   files atomically.
3. Every result records what produced it: its config and :func:`iclgd.runner.store.library_versions`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TMP_PREFIX = ".tmp-"


def tmp_sibling(path: Path) -> Path:
    """Where ``path`` is written before its rename: ``.tmp-<name>-<host>-<pid>`` beside it."""
    path = Path(path)
    return path.parent / f"{TMP_PREFIX}{path.name}-{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale(folder: Path) -> list[Path]:
    """Remove the temporary siblings in ``folder`` that processes of this host left when they were killed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host_marker = f"-{socket.gethostname()}-"
    removed = []
    for path in folder.glob(f"{TMP_PREFIX}*"):
        head, _, pid = path.name.rpartition("-")
        if not pid.isdigit() or not (head + "-").endswith(host_marker):
            continue
        if int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def current_umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere it is read by setting it, which for
    that instant changes it for every thread of the process."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_modes(path: Path) -> None:
    """Give ``path`` (a file, or every file under a folder) the mode a plain ``open`` gives under the umask:
    safetensors writes its files 0600, which a cache or run shared with a group could not read."""
    mode = 0o666 & ~current_umask()
    path = Path(path)
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.chmod(file, mode)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path`` in one rename, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = tmp_sibling(path)
    try:
        yield tmp
        if tmp.exists():
            plain_modes(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = False,
                  complete: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """An empty temporary folder to fill; on success it becomes ``path`` in one rename, on error it is removed.

    If ``path`` exists by then it is replaced (``replace=True``), or kept and ours dropped when ``complete(path)``
    says it is a finished result (another process finished the same result first); anything else there is an
    error (FileExistsError), never a silent loss of what we computed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = tmp_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        plain_modes(tmp)
        if replace and path.exists():
            old = tmp_sibling(path.with_name(path.name + ".old"))
            os.replace(path, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
            if complete is None or not complete(path):
                raise FileExistsError(f"{path} exists and is not a finished result: move it away and rerun") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet_table(table: Any, path: str | Path) -> None:
    """``pq.write_table`` without min/max statistics on floating-point columns: pyarrow leaves NaN out of them, and
    DuckDB then answers ``WHERE isnan(value)`` from the statistics with no rows. The other columns keep theirs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(table, path, write_statistics=kept)


def write_parquet(rows: Sequence[dict[str, Any]], path: str | Path, record: dict[str, Any]) -> Path:
    """``rows`` as one Parquet table with ``record`` (JSON) under the schema metadata key ``iclgd``, written
    atomically: how a command whose result is one table records what produced it (icl-curve, weights)."""
    import json

    import pyarrow as pa

    path = Path(path)
    table = pa.Table.from_pylist(list(rows))
    table = table.replace_schema_metadata({"iclgd": json.dumps(record, sort_keys=True, default=str)})
    with atomic_file(path) as tmp:
        write_parquet_table(table, tmp)
    return path


def save_figure(figure: Figure, stem: str | Path, *, dpi: int = 200) -> list[Path]:
    """``stem``.png and ``stem``.pdf, each written atomically; closes the figure."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    paths = []
    for suffix in (".png", ".pdf"):
        path = stem.with_suffix(suffix)
        with atomic_file(path) as tmp:
            figure.savefig(tmp, format=suffix[1:], dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths
