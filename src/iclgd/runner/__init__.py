"""Runner and store: units, sweeps, Parquet results.

    from iclgd.runner import UnitResult, layer_rows, open_results, run_sweep, unit_id, write_tensors
"""

from iclgd.runner.results import open_results, open_unit, query, read_record, unit_dirs
from iclgd.runner.store import (
    METRICS_SCHEMA,
    PREDICTIONS_SCHEMA,
    UnitResult,
    is_done,
    layer_rows,
    library_versions,
    metric_row,
    read_tensors,
    unit_writer,
    write_record,
    write_tensors,
    write_unit,
)
from iclgd.runner.sweep import SweepReport, run_sweep
from iclgd.runner.units import canonical_json, config_dict, unit_id

__all__ = [
    "METRICS_SCHEMA",
    "PREDICTIONS_SCHEMA",
    "SweepReport",
    "UnitResult",
    "canonical_json",
    "config_dict",
    "is_done",
    "layer_rows",
    "library_versions",
    "metric_row",
    "open_results",
    "open_unit",
    "query",
    "read_record",
    "read_tensors",
    "run_sweep",
    "unit_dirs",
    "unit_id",
    "unit_writer",
    "write_record",
    "write_tensors",
    "write_unit",
]
