"""File sinks when the results' columns change within a run (a new model)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.errors import SinkSchemaError
from inferline.io.filesinks import ParquetSink


def test_parquet_keeps_its_first_columns_missing_ones_null_new_ones_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.open()
    sink.write(pa.record_batch({"key": ["a"], "prediction": [1], "model_id": ["m/1"]}))
    with caplog.at_level(logging.WARNING, logger="inferline.sinks"):
        sink.write(pa.record_batch({"key": ["b"], "prediction": [2], "scores": [[0.5, 0.5]]}))
        sink.write(pa.record_batch({"key": ["c"], "prediction": [3], "scores": [[0.1, 0.9]]}))
    with pytest.raises(
        SinkSchemaError, match="out.parquet: column 'prediction' is string but the file has int64"
    ):
        sink.write(pa.record_batch({"key": ["d"], "prediction": ["x"]}))
    sink.commit()
    sink.close()
    assert pq.read_table(path).to_pylist() == [
        {"key": "a", "prediction": 1, "model_id": "m/1"},
        {"key": "b", "prediction": 2, "model_id": None},
        {"key": "c", "prediction": 3, "model_id": None},
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: column scores is new and left out (a Parquet file keeps its first batch's columns; "
        "a DuckDB or JSONL sink takes new ones)"
    ]
