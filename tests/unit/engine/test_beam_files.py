"""Beam's file writers when a watched model is swapped within one file (a stream's window)."""

from __future__ import annotations

import io
import logging
from typing import Any

import pyarrow.parquet as pq
import pytest

from inferline.engine.beam_files import CsvRows, ParquetRows
from inferline.errors import SinkSchemaError

V1 = [{"key": str(i), "prediction": i % 3, "model_id": "iris/1"} for i in range(4)]
V2 = [
    {"key": str(i), "prediction": i % 3, "model_id": "iris/2", "scores": [0.2, 0.3, 0.5]} for i in range(4, 8)
]


class _Kept(io.BytesIO):
    def close(self) -> None:  # the writer closes its file; keep the bytes for the test
        pass


def _write(sink: Any, rows: list[dict[str, Any]]) -> bytes:
    fh = _Kept()
    sink.open(fh)
    for row in rows:
        sink.write(row)
    sink.flush()
    return fh.getvalue()


def test_a_file_takes_the_columns_of_every_row_of_its_first_batch() -> None:
    table = pq.read_table(io.BytesIO(_write(ParquetRows(), V1 + V2)))
    assert table.schema.names == ["key", "prediction", "model_id", "scores"]
    assert table.column("scores").to_pylist() == [None] * 4 + [[0.2, 0.3, 0.5]] * 4


def test_a_column_new_in_a_later_batch_is_left_out_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    sink = ParquetRows()
    sink.buffer_rows = 4
    with caplog.at_level(logging.WARNING, logger="inferline.sinks"):
        table = pq.read_table(io.BytesIO(_write(sink, V1 + V2 + V2)))
    assert table.num_rows == 12 and "scores" not in table.schema.names
    assert [r.getMessage() for r in caplog.records] == [
        "--runner beam parquet sink: column scores is new and left out of this file (a file keeps "
        "the columns of its first 4 rows; the next window's file has it)"
    ]


def test_a_value_that_does_not_fit_the_files_column_fails_in_one_line() -> None:
    sink = CsvRows()
    sink.buffer_rows = 4
    with pytest.raises(SinkSchemaError) as caught:
        _write(sink, V1 + [{"key": "9", "prediction": "setosa", "model_id": "iris/3"}])
    message = str(caught.value)
    assert message.startswith("--runner beam csv sink: rows of one file do not share a schema (")
    assert message.endswith("); write the new model's output to another sink.path")
    assert "\n" not in message
