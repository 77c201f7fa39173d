"""Writing one unit's results, atomically: ``<out>/<unit_id>/`` exists only when it is complete.

A unit folder holds:
    metrics.parquet      the long table, METRICS_SCHEMA (one row per unit x method x metric x layer)
    predictions.parquet  one row per eval example and pass, PREDICTIONS_SCHEMA
    example_scores.parquet  one row per eval example x method x metric, EXAMPLE_SCORES_SCHEMA: the per-example
                         value (mean over layers) behind each layer-null score, for paired tests across units
    record.json          the full config, versions and everything needed to say how the numbers were made
    captures/            optional safetensors files of per-example per-layer captures

Everything is written into ``<out>/.tmp-<unit_id>-<pid>/`` and then moved with one ``os.rename``; an
exception removes the temporary folder, and a folder left by a killed process is removed by the next sweep
or compare. While a process runs a unit it holds ``<out>/.lock-<unit_id>`` (an flock, released by the kernel
when the process dies, so a lock is never stale): concurrent sweeps on one folder share the units.

The ``metrics`` table, one row per value:
    unit, model, variant ("trained" | "untrained:all" | ...), task, template, seed, order, k, true_k,
    method ("zs" | "icl" | "gd" | "lcgd" | ...: the pass, or the FT method ICL is compared with),
    metric ("accuracy", "simaou", ...), layer (int32; null = the mean over layers, or a layer-less metric),
    value (float64), count (int64), ci_low and ci_high (float64: the 95% percentile bootstrap interval of value
    over the unit's eval examples; null where a value has none, e.g. counts and Rec2FTP), epoch (int64: the FT
    epoch a value was measured at; null for passes without training, zs and icl).
``count`` is the number of examples behind ``value`` (for the layer-null row of a per-layer metric, the
largest per-layer count). For a ``*_zero_count`` metric, ``value`` is the number of cases whose Δ counted
as zero and ``count`` the number of cases tested (examples x heads for SimAM); its layer-null row holds the
totals over layers. ``masked_key_count`` (per pass) is the number of test-token keys a layer's window hid from
the analysis position, out of ``count`` test-token keys. ``accuracy`` is a fraction in [0, 1]; ``rec2ftp`` and
``rec2ftp_chance`` are percent.
Extra columns are allowed (readers union them by name).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from iclgd.runner.units import check_unit_id, config_dict
from iclgd.runs import atomic_folder, plain_modes, write_parquet_table

UNIT_FILES = ("record.json", "metrics.parquet", "predictions.parquet", "example_scores.parquet")
# The layout of a unit folder and the meaning of its ids and values; a reader refuses units of another format
# rather than mix them (format 2: unit ids from runner.units.unit_id, per-example baseline draws, bootstrap CIs;
# format 3: FT methods by name, an epoch per FT value; format 4: per-example scores).
RESULTS_FORMAT = 4
LOCK_PREFIX = ".lock-"

METRICS_SCHEMA = pa.schema(
    [
        ("unit", pa.string()),
        ("model", pa.string()),
        ("variant", pa.string()),
        ("task", pa.string()),
        ("template", pa.int64()),
        ("seed", pa.int64()),
        ("order", pa.int64()),
        ("k", pa.int64()),
        ("true_k", pa.int64()),
        ("method", pa.string()),
        ("metric", pa.string()),
        ("layer", pa.int32()),
        ("value", pa.float64()),
        ("count", pa.int64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("epoch", pa.int64()),
    ]
)
# Columns a producer may leave out (null): the bootstrap interval of a value that has none, the epoch of a value
# measured without training.
OPTIONAL_COLUMNS = ("ci_low", "ci_high", "epoch")

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("unit", pa.string()),
        ("example", pa.int64()),
        ("method", pa.string()),
        ("gold", pa.string()),
        ("prediction", pa.string()),
        ("correct", pa.bool_()),
        ("candidate_logprobs", pa.list_(pa.float64())),
        ("fullvocab_token", pa.string()),
        ("fullvocab_correct", pa.bool_()),
    ]
)

# The per-example values of each score a unit reports (the layer mean for a per-layer metric), at the epochs the
# tables read (none, or each method's last): a trained unit and an untrained variant of it are scored on the same
# eval examples, so their difference has a paired bootstrap interval (``iclgd.report.paired``).
EXAMPLE_SCORES_SCHEMA = pa.schema(
    [
        ("unit", pa.string()),
        ("method", pa.string()),
        ("metric", pa.string()),
        ("epoch", pa.int64()),
        ("example", pa.int64()),
        ("value", pa.float64()),
    ]
)

KEY_COLUMNS = ("model", "variant", "task", "template", "seed", "order", "k", "true_k")


@dataclass
class UnitResult:
    """What running one unit returns to the driver (the driver alone writes results).

    ``metrics`` and ``predictions``: a pyarrow Table or a list of row dicts (the ``unit`` column is filled in
    by the store). ``record``: JSON-ready facts about the run (dtype, lr and how it was chosen, true_k, demo
    indices, BOS/SEP ids, timings, ...). ``example_scores``: rows of EXAMPLE_SCORES_SCHEMA (none for
units without per-example scores). ``captures``: name -> {tensor name -> Tensor}, one safetensors file each,
    floating tensors cast to ``captures_dtype`` (None keeps full precision).
    """

    metrics: pa.Table | list[dict[str, Any]]
    predictions: pa.Table | list[dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)
    example_scores: pa.Table | list[dict[str, Any]] = field(default_factory=list)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures_dtype: str | None = None


def metric_row(metric: str, value: float, count: int, *, method: str, layer: int | None = None,
               ci: tuple[float, float] | None = None, epoch: int | None = None, **keys: Any) -> dict:
    """One metrics row; ``keys`` are the KEY_COLUMNS (model, variant, task, template, seed, order, k, true_k);
    ``ci`` the 95% bootstrap interval over examples, where the value has one."""
    low, high = (None, None) if ci is None else (float(ci[0]), float(ci[1]))
    return {**keys, "method": method, "metric": metric, "layer": layer, "value": float(value), "count": int(count),
            "ci_low": low, "ci_high": high, "epoch": epoch}


def layer_rows(
    metric: str, per_layer: Sequence[float], counts: Sequence[int] | int, *, method: str,
    cis: Sequence[tuple[float, float]] | None = None, mean_ci: tuple[float, float] | None = None,
    epoch: int | None = None, **keys: Any
) -> list[dict]:
    """One row per layer plus the layer-null row: the uniform mean over the layers that are not NaN
    (NaN if all are), or for ``*_count`` metrics (cases counted) the sum over layers (value and count).
    ``cis`` (one per layer) and ``mean_ci`` (of the layer mean) are bootstrap intervals over examples."""
    per_layer = [float(v) for v in per_layer]
    counts = [int(counts)] * len(per_layer) if isinstance(counts, int | np.integer) else [int(c) for c in counts]
    if len(counts) != len(per_layer):
        raise ValueError(f"{metric}: {len(per_layer)} layer values but {len(counts)} counts")
    pairs = enumerate(zip(per_layer, counts, strict=True))
    rows = [metric_row(metric, v, c, method=method, layer=i, ci=cis[i] if cis else None, epoch=epoch, **keys)
            for i, (v, c) in pairs]
    if metric.endswith("_count"):
        mean, total = float(sum(per_layer)), sum(counts)
    else:
        finite = [v for v in per_layer if not math.isnan(v)]
        mean, total = (sum(finite) / len(finite) if finite else math.nan), max(counts, default=0)
    return rows + [metric_row(metric, mean, total, method=method, layer=None, ci=mean_ci, epoch=epoch, **keys)]


def _as_table(rows: pa.Table | list[dict[str, Any]], schema: pa.Schema, unit: str, what: str) -> pa.Table:
    """Rows -> a table with ``schema``'s columns first (cast to its types), the unit filled in, extras kept."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    if table.num_rows == 0 and table.num_columns == 0:
        return schema.empty_table()
    for name in OPTIONAL_COLUMNS:
        if name in schema.names and name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    missing = [name for name in schema.names if name != "unit" and name not in table.column_names]
    if missing:
        raise ValueError(f"{what} of unit {unit} lack the columns {missing}")
    columns = [pa.array([unit] * table.num_rows, pa.string())]
    columns += [table.column(name).cast(schema.field(name).type) for name in schema.names[1:]]
    extras = [name for name in table.column_names if name not in schema.names]
    return pa.Table.from_arrays(
        columns + [table.column(name) for name in extras],
        schema=pa.schema(list(schema) + [table.schema.field(name) for name in extras]),
    )


def metrics_table(rows: pa.Table | list[dict[str, Any]], unit: str) -> pa.Table:
    """The metrics rows of ``unit`` as a METRICS_SCHEMA table."""
    return _as_table(rows, METRICS_SCHEMA, unit, "metrics")


def predictions_table(rows: pa.Table | list[dict[str, Any]], unit: str) -> pa.Table:
    """The prediction rows of ``unit`` as a PREDICTIONS_SCHEMA table."""
    return _as_table(rows, PREDICTIONS_SCHEMA, unit, "predictions")


def example_scores_table(rows: pa.Table | list[dict[str, Any]], unit: str) -> pa.Table:
    """The per-example score rows of ``unit`` as an EXAMPLE_SCORES_SCHEMA table."""
    return _as_table(rows, EXAMPLE_SCORES_SCHEMA, unit, "example scores")


def library_versions(*extra: str) -> dict[str, str]:
    """Versions of python and the libraries that shape a result, plus ``extra`` packages (the one place every record
    takes them from)."""
    versions = {"python": platform.python_version()}
    for name in ("iclgd", "torch", "transformers", "numpy", "pyarrow", *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy and torch scalars/arrays
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)  # torch.dtype, torch.device, ...


def _strict_json(value: Any) -> Any:
    """NaN and ±inf become null, so that record.json is strict JSON (DuckDB's json functions read it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(item) for item in value]
    return value


def write_record(unit_dir: Path, unit: str, config: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    """record.json = {unit, created_at, config, versions, ...record}; ``record``'s own keys win; NaN -> null."""
    full = {
        "unit": unit,
        "results_format": RESULTS_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_dict(config),
        "versions": library_versions(),
    }
    full.update(record)
    full["unit"] = unit
    full["results_format"] = RESULTS_FORMAT
    full = _strict_json(json.loads(json.dumps(full, default=_json_default)))
    (Path(unit_dir) / "record.json").write_text(json.dumps(full, indent=2, allow_nan=False) + "\n")
    return full


def write_tensors(unit_dir: Path, name: str, tensors: Mapping[str, Any], dtype: Any = None,
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Save ``tensors`` to ``<unit_dir>/captures/<name>.safetensors``; floating tensors are cast to ``dtype``
    (None, the default, keeps theirs). Use TransformerLens-like names: ``blocks.3.attn_out``."""
    import torch
    from safetensors.torch import save_file

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=-]*", name):
        raise ValueError(f"bad capture name {name!r}: use letters, digits, '_', '.', '=', '-'")
    cast = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    ready = {}
    for key, tensor in tensors.items():
        tensor = torch.as_tensor(tensor).detach().cpu()
        if cast is not None and tensor.is_floating_point():
            tensor = tensor.to(cast)
        ready[key] = tensor.contiguous()
    path = Path(unit_dir) / "captures" / f"{name}.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file(ready, str(path), metadata=dict(metadata) if metadata else None)
    plain_modes(path)
    return path


def read_tensors(unit_dir: Path, name: str) -> dict[str, Any]:
    """The tensors of ``<unit_dir>/captures/<name>.safetensors``, as saved."""
    from safetensors.torch import load_file

    return load_file(str(Path(unit_dir) / "captures" / f"{name}.safetensors"))


def is_done(out: Path, unit: str) -> bool:
    """True when ``<out>/<unit>/`` holds all of UNIT_FILES."""
    unit_dir = Path(out) / unit
    return all((unit_dir / name).is_file() for name in UNIT_FILES)


def lock_unit(out: Path, unit: str, *, wait: bool = False) -> int | None:
    """Take ``<out>/.lock-<unit>``: an exclusive flock on it, held until :func:`unlock_unit`; returns its file
    descriptor, or None when another live process holds it (``wait``: block until it is released instead).

    The holder writes "pid host" into the file (for messages) and removes the file when done; a process that
    got the lock on a file removed meanwhile locks the new one, so two processes never hold the same unit.
    """
    path = Path(out) / f"{LOCK_PREFIX}{check_unit_id(unit)}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)


def unlock_unit(out: Path, unit: str, fd: int) -> None:
    """Release a lock taken by :func:`lock_unit` and remove its file."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(out) / f"{LOCK_PREFIX}{unit}")
    os.close(fd)


def lock_holder(out: Path, unit: str) -> str:
    """Who holds the lock of ``unit``, as "pid N on HOST" (for messages; "" when unknown)."""
    try:
        pid, host = (Path(out) / f"{LOCK_PREFIX}{unit}").read_text().split()
    except (OSError, ValueError):
        return ""
    return f"pid {pid} on {host}"


@contextlib.contextmanager
def unit_writer(out: Path, unit: str) -> Iterator[Path]:
    """Yield an empty temporary folder for ``unit``; on success it becomes ``<out>/<unit>/`` in one rename.

    The caller writes all of UNIT_FILES (and captures) into it. On any exception the folder is removed.
    If another process finished the same unit meanwhile, its folder is kept and ours is dropped.
    """
    check_unit_id(unit)
    with atomic_folder(Path(out) / unit, complete=lambda folder: is_done(folder.parent, folder.name)) as tmp:
        yield tmp
        missing = [name for name in UNIT_FILES if not (tmp / name).is_file()]
        if missing:
            raise RuntimeError(f"unit {unit} was not written completely (missing {missing})")


def write_unit(out: Path, unit: str, config: Any, result: UnitResult) -> Path:
    """Write one unit's tables, record and captures atomically; return ``<out>/<unit>/``.

    ``result`` is a UnitResult or any object with the same attributes; ``captures`` may also be a list of
    tensor dicts (one per batch), written as ``part-00000``, ``part-00001``, ...
    """
    metrics = metrics_table(result.metrics, unit)
    predictions = predictions_table(result.predictions, unit)
    example_scores = example_scores_table(getattr(result, "example_scores", None) or [], unit)
    captures = result.captures or {}
    if not isinstance(captures, Mapping):
        captures = {f"part-{index:05d}": tensors for index, tensors in enumerate(captures)}
    with unit_writer(out, unit) as tmp:
        write_parquet_table(metrics, tmp / "metrics.parquet")
        write_parquet_table(predictions, tmp / "predictions.parquet")
        write_parquet_table(example_scores, tmp / "example_scores.parquet")
        for name, tensors in captures.items():
            write_tensors(tmp, name, tensors, dtype=getattr(result, "captures_dtype", None))
        write_record(tmp, unit, config, result.record or {})
    return Path(out) / unit
