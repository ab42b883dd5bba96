"""Beam file writers (`fileio.FileSink`s) for Parquet, JSONL and CSV sinks under `--runner beam`.

`engine/beam_io.py` `write_sink` hands them to `fileio.WriteToFiles`, which opens one per
file (shard, and window on a stream). Their columns and value encodings are the local
engine's file sinks' (`io/filesinks.py`); unlike those, a file cannot be followed by another
with a wider schema from inside a Beam sink, so a file keeps its first batch's columns.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io import fileio

from inferline.errors import SinkSchemaError

log = logging.getLogger("inferline.sinks")


def file_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Result rows for these writers: float32 values stay numpy float32, so a file's column
    is `float` as the local engine writes it (`to_pylist` alone makes every float a double:
    a SavedModel's or TFLite model's float32 regression output came out as `double`).

    Example:
        >>> file_rows(pa.record_batch({"p": pa.array([1.5], pa.float32())}))[0]["p"].dtype
        dtype('float32')
    """
    rows: list[dict[str, Any]] = batch.to_pylist()
    for field in batch.schema:
        if not pa.types.is_float32(field.type):
            continue
        for row in rows:
            if row[field.name] is not None:
                row[field.name] = np.float32(row[field.name])
    return rows


class _RowsSink(fileio.FileSink):
    """Buffers rows and writes them as Arrow batches; the first batch fixes the schema.

    The first batch takes every column any of its rows has (a window in which a watched
    model was swapped for one that writes `scores`: earlier rows NULL there). A file has
    one schema and Beam gives a sink one file, so a column that first appears in a later
    batch is left out with one warning; a value whose type does not fit the file's column
    fails the run in one line (a Beam file sink has no dead-letter output).
    """

    buffer_rows = 65536
    kind = "file"

    def open(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._rows: list[Mapping[str, Any]] = []
        self._schema: pa.Schema | None = None
        self._left_out: set[str] = set()

    def write(self, record: Mapping[str, Any]) -> None:
        self._rows.append(record)
        if len(self._rows) >= self.buffer_rows:
            self._drain()

    def flush(self) -> None:
        self._drain()
        self._close()
        self._fh.flush()

    def _drain(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            if self._schema is None:
                names = list(dict.fromkeys(name for row in rows for name in row))
                batch = pa.RecordBatch.from_pydict({name: [row.get(name) for row in rows] for name in names})
                self._schema = batch.schema
            else:
                self._leave_out(rows, self._schema)
                batch = pa.RecordBatch.from_pylist(rows, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise SinkSchemaError(
                f"--runner beam {self.kind} sink: rows of one file do not share a schema ("
                f"{str(exc).splitlines()[0]}); write the new model's output to another sink.path"
            ) from None
        self._write(batch)

    def _leave_out(self, rows: list[Mapping[str, Any]], schema: pa.Schema) -> None:
        for name in dict.fromkeys(name for row in rows for name in row):
            if schema.get_field_index(name) < 0 and name not in self._left_out:
                self._left_out.add(name)
                log.warning(
                    "--runner beam %s sink: column %s is new and left out of this file (a file "
                    "keeps the columns of its first %s rows; the next window's file has it)",
                    self.kind,
                    name,
                    f"{self.buffer_rows:,}",
                )

    def _write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Writers with a footer finish it here."""


class ParquetRows(_RowsSink):
    """One Parquet file per shard (and window, on a stream)."""

    kind = "parquet"

    def _write(self, batch: pa.RecordBatch) -> None:
        if getattr(self, "_writer", None) is None:
            self._writer = pq.ParquetWriter(self._fh, batch.schema)
        self._writer.write_batch(batch)

    def _close(self) -> None:
        if getattr(self, "_writer", None) is not None:
            self._writer.close()
            self._writer = None


def _json_value(value: Any) -> Any:
    # Bytes (an objects source's `data`) as base64, as the local engine's JSON and CSV sinks write them.
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, np.generic):  # float32 values from `file_rows`
        return value.item()
    return str(value)


class JsonlRows(fileio.FileSink):
    """Newline-delimited JSON, one object per row."""

    def open(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=_json_value, separators=(",", ":")).encode("utf-8") + b"\n")

    def flush(self) -> None:
        self._fh.flush()


class CsvRows(_RowsSink):
    """CSV with a header; list and struct values are written as JSON text."""

    kind = "csv"

    def write(self, record: Mapping[str, Any]) -> None:
        flat = {
            k: json.dumps(v, default=_json_value, separators=(",", ":"))
            if isinstance(v, (list, dict))
            else _json_value(v)
            if isinstance(v, bytes)
            else v
            for k, v in record.items()
        }
        super().write(flat)

    def _write(self, batch: pa.RecordBatch) -> None:
        if getattr(self, "_writer", None) is None:
            self._writer = pa_csv.CSVWriter(self._fh, batch.schema)
        self._writer.write_batch(batch)

    def _close(self) -> None:
        if getattr(self, "_writer", None) is not None:
            self._writer.close()
            self._writer = None
