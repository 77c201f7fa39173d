"""The run folder of `iclgd linreg train`, and atomic writers for its results.

A run folder holds config.yaml (kind: linreg, every resolved setting), weights.safetensors, curve.parquet,
and the outputs of compare/critique (Parquet + PNG + PDF). Every Parquet file carries the versions of
iclgd and torch and the run's config in its schema metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from iclgd import runs
from iclgd.config_files import differences
from iclgd.errors import UserError
from iclgd.runner.store import library_versions
from iclgd.runs import atomic_file, atomic_folder, write_parquet_table
from iclgd.synthetic.linreg.config import TrainConfig, check_run_dir
from iclgd.synthetic.linreg.data import Tasks, generator, sample_tasks, stream_seeds
from iclgd.synthetic.linreg.lsa import LSA, MATRICES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
CURVE_FILE = "curve.parquet"


def build_model(config: TrainConfig, dtype: torch.dtype = torch.float32) -> LSA:
    """An all-zero LSA of the run's architecture."""
    return LSA(config.d, config.m, config.n_context, dtype=dtype, **config.model_options())


def eval_tasks(config: TrainConfig, dtype: torch.dtype = torch.float64, n_tasks: int | None = None,
               input_range: float | None = None, weight_scale: float | None = None, stream: str = "eval") -> Tasks:
    """The fixed, seeded eval set (the first n_tasks of it), optionally at another input range / weight scale.

    Always drawn in float64, then cast: training's float32 eval set holds the same tasks as compare's.
    """
    tasks = sample_tasks(
        config.eval_tasks if n_tasks is None else n_tasks, config.d, config.m, config.n_context,
        config.input_range if input_range is None else input_range,
        config.weight_scale if weight_scale is None else weight_scale,
        gen=generator(stream_seeds(config.seed)[stream]), dtype=torch.float64,
    )
    return tasks.to(dtype)


def model_tensors(model: LSA) -> dict[str, torch.Tensor]:
    """{'layers.{l}.W_Q': ..., ...}: one entry per stored matrix (one set when recurrent)."""
    return {f"layers.{index}.{name}": matrix.detach().contiguous()
            for name in MATRICES for index, matrix in enumerate(getattr(model, name))}


def load_run(run_dir: str | Path, dtype: torch.dtype = torch.float64) -> tuple[TrainConfig, LSA]:
    """(config, trained model) of a linreg run folder; a clear UserError when it is missing or not a linreg run."""
    run_dir = check_run_dir(run_dir)
    config_path, weights_path = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE
    try:
        config = TrainConfig.model_validate(yaml.safe_load(config_path.read_text()))
    except ValidationError as err:
        problem = err.errors()[0]["msg"]
        raise UserError(f"{config_path} is not a valid linreg config ({problem}): retrain the run") from None
    model = build_model(config, dtype)
    tensors = load_file(str(weights_path))
    with torch.no_grad():
        for key, value in model_tensors(model).items():
            if key not in tensors or tensors[key].shape != value.shape:
                raise UserError(f"{weights_path} does not match {config_path} ({key}): retrain the run")
            value.copy_(tensors[key].to(dtype))
    return config, model


def write_table(rows: list[dict[str, Any]] | dict[str, list], path: Path, config: TrainConfig,
                extra: dict[str, Any] | None = None) -> Path:
    """Parquet (written atomically) with versions, the run config and `extra` in the schema metadata."""
    table = pa.Table.from_pylist(rows) if isinstance(rows, list) else pa.Table.from_pydict(rows)
    metadata = {**library_versions(), "config": config.model_dump_json()}
    metadata.update({key: json.dumps(value) for key, value in (extra or {}).items()})
    table = table.replace_schema_metadata({key: str(value) for key, value in metadata.items()})
    with atomic_file(path) as tmp:
        write_parquet_table(table, tmp)
    return path


def save_figure(figure: Figure, base: Path) -> list[Path]:
    """`base`.png and `base`.pdf, each written atomically; closes the figure."""
    return runs.save_figure(figure, base, dpi=150)


def check_out(out: Path, config: TrainConfig, overwrite: bool = False,
              hint: str = "pass --overwrite to replace it, or choose another --out") -> bool:
    """True when ``out`` already holds this very run (rerun = nothing to do). Refuses anything else that is not an
    empty folder, except a linreg run with ``overwrite`` (the run-folder rule of :mod:`iclgd.runs`)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    is_run = (out / CONFIG_FILE).is_file() and (out / WEIGHTS_FILE).is_file() and (out / CURVE_FILE).is_file()
    if is_run and not overwrite:
        saved = yaml.safe_load((out / CONFIG_FILE).read_text())
        asked = config.model_dump(mode="json")
        if {k: v for k, v in saved.items() if k != "out"} == {k: v for k, v in asked.items() if k != "out"}:
            return True  # the same run (reached by any path to its folder)
        differ = differences(saved, asked, skip={"out"})  # threads too: float sums, hence weights, depend on them
        raise UserError(f"{out} holds a linreg run with another config ({differ or 'another version'}): {hint}")
    if not is_run:
        raise UserError(f"{out} exists and is not an empty folder or a linreg run: choose another --out")
    return False


def read_curve(out: Path) -> dict[str, list]:
    """The training curve of a run folder (step, train_loss, eval_loss)."""
    return pq.read_table(Path(out) / CURVE_FILE).to_pydict()


def write_run(out: Path, config: TrainConfig, model: LSA, curve: dict[str, list]) -> Path:
    """Write the run folder in a temporary sibling, then move it into place (nothing half-written)."""
    out = Path(out)
    with atomic_folder(out, replace=True) as staging:
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        metadata = {**library_versions(), "config": config.model_dump_json()}
        save_file(model_tensors(model), str(staging / WEIGHTS_FILE), metadata=metadata)
        write_table(curve, staging / CURVE_FILE, config)
    return out
