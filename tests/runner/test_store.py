import json
import math
import os
import socket

import pyarrow.parquet as pq
import pytest
import torch

from iclgd.runner import (
    METRICS_SCHEMA,
    PREDICTIONS_SCHEMA,
    is_done,
    layer_rows,
    read_tensors,
    unit_writer,
    write_tensors,
    write_unit,
)
from iclgd.runner.store import UNIT_FILES
from iclgd.runs import remove_stale
from tests.runner.helpers import fake_result, keys

CONFIG = {"task": "sst2", "k": 4, "seed": 1}


def test_layer_rows_mean_and_zero_count_totals():
    rows = layer_rows("simam_delta", [0.2, math.nan, 0.4], [5, 5, 5], method="gd", **keys())
    assert [r["layer"] for r in rows] == [0, 1, 2, None]
    assert rows[-1]["value"] == pytest.approx(0.3)  # NaN layers are left out of the mean
    assert rows[-1]["count"] == 5
    zeros = layer_rows("simam_delta_zero_count", [3, 0, 1], [40, 40, 40], method="gd", **keys())
    assert (zeros[-1]["value"], zeros[-1]["count"]) == (4.0, 120)
    assert math.isnan(layer_rows("kendall", [math.nan], 1, method="gd", **keys())[-1]["value"])


def test_write_unit_layout_schemas_and_record(tmp_path):
    unit_dir = write_unit(tmp_path, "sst2-k4-s1-abc", CONFIG, fake_result(CONFIG))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sst2-k4-s1-abc"]
    assert is_done(tmp_path, "sst2-k4-s1-abc")
    metrics = pq.read_table(unit_dir / "metrics.parquet")
    assert metrics.schema.equals(METRICS_SCHEMA)
    assert set(metrics.column("unit").to_pylist()) == {"sst2-k4-s1-abc"}
    assert metrics.filter(metrics["layer"].is_null()).num_rows == 3  # zs, icl accuracy + simaou mean
    predictions = pq.read_table(unit_dir / "predictions.parquet")
    assert predictions.schema.equals(PREDICTIONS_SCHEMA)
    assert predictions.column("candidate_logprobs").to_pylist()[0] == [-0.1, -2.0]
    record = json.loads((unit_dir / "record.json").read_text())
    assert record["unit"] == "sst2-k4-s1-abc"
    assert record["config"] == CONFIG
    assert record["dtype"] == "float32"
    assert {"iclgd", "torch", "transformers", "python", "numpy"} <= set(record["versions"])
    assert record["created_at"].endswith("+00:00")


def test_record_is_strict_json(tmp_path):
    result = fake_result(CONFIG)
    result.record.update(lr=float("nan"), timings={"ft_s": float("inf")}, dtype=torch.float32, path=tmp_path)
    unit_dir = write_unit(tmp_path, "u1", CONFIG, result)
    text = (unit_dir / "record.json").read_text()
    record = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in record.json"))
    assert record["lr"] is None and record["timings"] == {"ft_s": None}
    assert record["dtype"] == "torch.float32" and record["path"] == str(tmp_path)


def test_columns_are_cast_and_extra_columns_kept(tmp_path):
    result = fake_result(CONFIG)
    for row in result.metrics:
        row["epoch"] = 3
    result.predictions = [dict(example=0, method="zs", gold=1, prediction=0, correct=False, candidate_logprobs=[-1, -2],
                               fullvocab_token=42, fullvocab_correct=False)]
    unit_dir = write_unit(tmp_path, "u1", CONFIG, result)
    metrics = pq.read_table(unit_dir / "metrics.parquet")
    assert metrics.column_names[-1] == "epoch"
    predictions = pq.read_table(unit_dir / "predictions.parquet").to_pylist()[0]
    assert (predictions["gold"], predictions["fullvocab_token"]) == ("1", "42")


def test_missing_column_fails_before_anything_is_written(tmp_path):
    result = fake_result(CONFIG)
    del result.metrics[0]["value"]
    with pytest.raises(ValueError, match="value"):
        write_unit(tmp_path, "u1", CONFIG, result)
    assert not any(tmp_path.iterdir())


def test_exception_mid_write_leaves_no_unit_folder(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with unit_writer(tmp_path, "u1") as tmp:
            (tmp / "metrics.parquet").write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert not is_done(tmp_path, "u1")


def test_incomplete_writer_is_not_published(tmp_path):
    with pytest.raises(RuntimeError, match="predictions.parquet"):
        with unit_writer(tmp_path, "u1") as tmp:
            (tmp / "record.json").write_text("{}")
            (tmp / "metrics.parquet").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_non_serialisable_record_leaves_nothing(tmp_path):
    result = fake_result(CONFIG)
    result.record["loop"] = result.record  # json.dumps fails on a circular reference
    with pytest.raises(ValueError):
        write_unit(tmp_path, "u1", CONFIG, result)
    assert list(tmp_path.iterdir()) == []


def test_a_unit_finished_by_someone_else_wins(tmp_path):
    write_unit(tmp_path, "u1", CONFIG, fake_result(CONFIG))
    first = (tmp_path / "u1" / "record.json").read_text()
    write_unit(tmp_path, "u1", {**CONFIG, "seed": 9}, fake_result(CONFIG))
    assert (tmp_path / "u1" / "record.json").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u1"]


def test_remove_stale_removes_dead_writers_of_this_host_only(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".tmp-u1-{host}-999999999"
    mine = tmp_path / f".tmp-u2-{host}-{os.getpid()}"
    elsewhere = tmp_path / ".tmp-u3-otherhost-999999999"  # another machine's writer: not ours to judge
    for path in (dead, mine, elsewhere):
        path.mkdir()
        (path / "metrics.parquet").write_bytes(b"partial")
    assert remove_stale(tmp_path) == [dead]
    assert not dead.exists() and mine.exists() and elsewhere.exists()


def test_captures_roundtrip_at_full_precision_or_cast(tmp_path):
    torch.manual_seed(0)
    attn_out = torch.randn(3, 2, 8)
    with unit_writer(tmp_path, "u1") as tmp:
        write_tensors(tmp, "icl", {"blocks.0.attn_out": attn_out, "example": torch.arange(3)}, dtype="float16")
        write_tensors(tmp, "icl-full", {"blocks.0.attn_out": attn_out})
        for name in UNIT_FILES:
            (tmp / name).write_text("{}")
    compact = read_tensors(tmp_path / "u1", "icl")
    assert compact["blocks.0.attn_out"].dtype == torch.float16
    assert compact["example"].dtype == torch.int64
    torch.testing.assert_close(compact["blocks.0.attn_out"].float(), attn_out, atol=2e-3, rtol=1e-3)
    assert torch.equal(read_tensors(tmp_path / "u1", "icl-full")["blocks.0.attn_out"], attn_out)
    with pytest.raises(ValueError):
        write_tensors(tmp_path, "../escape", {"x": attn_out})


def test_write_unit_accepts_capture_lists(tmp_path):
    result = fake_result(CONFIG)
    result.captures = [{"icl.attn_out": torch.ones(2, 3)}, {"icl.attn_out": torch.zeros(1, 3)}]
    unit_dir = write_unit(tmp_path, "u1", CONFIG, result)
    assert sorted(p.name for p in (unit_dir / "captures").iterdir()) == ["part-00000.safetensors",
                                                                         "part-00001.safetensors"]


def test_a_new_result_is_never_dropped_for_a_damaged_folder_in_its_place(tmp_path):
    (tmp_path / "u1").mkdir()
    (tmp_path / "u1" / "record.json").write_text("{}")  # not a finished unit
    with pytest.raises(FileExistsError, match="not a finished result"):
        write_unit(tmp_path, "u1", CONFIG, fake_result(CONFIG))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u1"]  # no temporary folder left behind


def test_written_files_take_the_umask_mode_though_safetensors_writes_0600(tmp_path):
    """safetensors creates its files 0600: iclgd's writers give them the mode of any other file they write."""
    from safetensors.torch import save_file

    from iclgd.runner.store import write_tensors
    from iclgd.runs import atomic_file, atomic_folder

    mask = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "folder") as staging:
            save_file({"w": torch.zeros(2)}, str(staging / "model.safetensors"))
            (staging / "notes.txt").write_text("plain")
        with atomic_file(tmp_path / "one.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        unit = tmp_path / "unit"
        unit.mkdir()
        captured = write_tensors(unit, "attn_out", {"blocks.0.attn_out": torch.zeros(2)})
        for path in (tmp_path / "folder" / "model.safetensors", tmp_path / "folder" / "notes.txt",
                     tmp_path / "one.safetensors", captured):
            assert os.stat(path).st_mode & 0o777 == 0o644, path
    finally:
        os.umask(mask)
