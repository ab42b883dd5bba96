"""File sinks: Parquet, JSONL and CSV, written to `<path>.partial` and renamed on success.

A failed run leaves the previous output untouched and its partial output beside it. A sink
never replaces a file of another kind (`io/targets.py`).
"""

from __future__ import annotations

import logging
import os
from typing import IO, Any

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from inferline.errors import SinkError, SinkSchemaError
from inferline.io.targets import check_output

log = logging.getLogger("inferline.sinks")


class _FileSink:
    kind = "file"

    def __init__(self, path: str, *, setting: str = "--set sink.path={}") -> None:
        self.path = path
        # How the user sets this path (`--set dead_letter={}`), for the refusal's hint.
        self.setting = setting
        self._handle: IO[bytes] | None = None
        self._fs: Any = None
        self._partial = ""
        self.rows = 0

    def describe(self) -> str:
        return self.path

    def open(self) -> None:
        check_output(self.path, self.kind, setting=self.setting)
        self._fs, _, (target,) = fsspec.get_fs_token_paths(self.path)
        parent = os.path.dirname(target)
        if parent:
            self._fs.makedirs(parent, exist_ok=True)
        self._partial = target + ".partial"
        try:
            self._handle = self._fs.open(self._partial, "wb")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write ({exc})") from None
        self._target = target

    def write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def _finish(self) -> None:
        """Subclasses close their writer here."""

    def close(self) -> None:
        if self._handle is None:
            return
        self._finish()
        self._handle.close()
        self._handle = None
        self._fs.mv(self._partial, self._target)

    def abort(self) -> None:
        """Close without replacing the previous output; the partial file stays for inspection."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Close without replacing the previous output, and remove the partial file
        (an interrupted run: the user stopped it, nothing to inspect)."""
        self.abort()
        if self._partial:
            try:
                self._fs.rm(self._partial)
            except OSError:
                pass


class ParquetSink(_FileSink):
    """One Parquet file; the schema is fixed by the first batch.

    A later batch without some of its columns writes nulls there; a column the file does not
    have (a new model's `scores`) is left out with one warning; a column whose type cannot be
    cast to the file's raises `SinkSchemaError` (the engine dead-letters those rows).
    """

    kind = "parquet"

    def __init__(self, path: str, *, setting: str = "--set sink.path={}") -> None:
        super().__init__(path, setting=setting)
        self._writer: pq.ParquetWriter | None = None
        self._left_out: set[str] = set()

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            assert self._handle is not None
            self._writer = pq.ParquetWriter(self._handle, batch.schema)
        elif batch.schema != self._writer.schema:
            batch = self._conform(batch, self._writer.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _conform(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        new = [name for name in batch.schema.names if schema.get_field_index(name) < 0]
        for name in new:
            if name not in self._left_out:
                self._left_out.add(name)
                log.warning(
                    "%s: column %s is new and left out (a Parquet file keeps its first batch's "
                    "columns; a DuckDB or JSONL sink takes new ones)",
                    self.path,
                    name,
                )
        columns = []
        for field in schema:
            if batch.schema.get_field_index(field.name) < 0:
                columns.append(pa.nulls(batch.num_rows, field.type))
                continue
            column = batch.column(field.name)
            try:
                columns.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise SinkSchemaError(
                    f"{self.path}: column {field.name!r} is {column.type} but the file has {field.type}"
                ) from None
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def binary_as_base64(con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Bytes columns (an objects source's `data`) as base64 text, for JSON and CSV files."""
    binary = [f.name for f in batch.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if not binary or batch.num_rows == 0:
        return batch
    replace = ", ".join(f'to_base64("{name}") AS "{name}"' for name in binary)
    con.register("_bytes", batch)
    try:
        table = con.sql(f"SELECT * REPLACE ({replace}) FROM _bytes").to_arrow_table()
    finally:
        con.unregister("_bytes")
    return table.combine_chunks().to_batches()[0]


class JsonlSink(_FileSink):
    """Newline-delimited JSON, one object per row (DuckDB's `to_json`, vectorised)."""

    kind = "jsonl"

    def __init__(self, path: str, *, setting: str = "--set sink.path={}") -> None:
        super().__init__(path, setting=setting)
        self._con = duckdb.connect()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        assert self._handle is not None
        batch = binary_as_base64(self._con, batch)
        self._con.register("_b", batch)
        try:
            ((lines,),) = self._con.execute(
                "SELECT string_agg(to_json(_b)::VARCHAR, chr(10)) FROM _b"
            ).fetchall()
        finally:
            self._con.unregister("_b")
        self._handle.write((lines + "\n").encode("utf-8"))
        self.rows += batch.num_rows


class CsvSink(_FileSink):
    """CSV with a header; list and struct columns are written as JSON text."""

    kind = "csv"

    def __init__(self, path: str, *, setting: str = "--set sink.path={}") -> None:
        super().__init__(path, setting=setting)
        self._writer: pa_csv.CSVWriter | None = None
        self._con = duckdb.connect()

    def write(self, batch: pa.RecordBatch) -> None:
        batch = self._flatten(batch)
        if self._writer is None:
            assert self._handle is not None
            self._writer = pa_csv.CSVWriter(self._handle, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _flatten(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = binary_as_base64(self._con, batch)
        nested = [
            f.name
            for f in batch.schema
            if pa.types.is_list(f.type)
            or pa.types.is_struct(f.type)
            or pa.types.is_large_list(f.type)
            or pa.types.is_fixed_size_list(f.type)
        ]
        if not nested:
            return batch
        self._con.register("_b", batch)
        try:
            cols = ", ".join(
                f'to_json("{f.name}")::VARCHAR AS "{f.name}"' if f.name in nested else f'"{f.name}"'
                for f in batch.schema
            )
            table = self._con.sql(f"SELECT {cols} FROM _b").to_arrow_table()
        finally:
            self._con.unregister("_b")
        return table.combine_chunks().to_batches()[0] if table.num_rows else batch

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
