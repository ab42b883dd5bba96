"""File sinks: Parquet, JSONL and CSV, written to `<path>.partial` and renamed on success.

A failed run leaves the previous output untouched and its partial output beside it. A sink
never replaces a file of another kind (`io/targets.py`).

A file has one schema. When a new model writes columns the Parquet or CSV file does not
have (a hot swap to a model with `scores`), the sink starts the next file with the wider
schema: `out.parquet`, then `out.schema-2.parquet`, ... (`output_files`); read them together
(`read_parquet('out*.parquet', union_by_name = true)`), older rows NULL in the new columns.
JSONL rows carry whatever columns they have, in one file.
"""

from __future__ import annotations

import logging
import os
import re
from typing import IO, Any

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from inferline.errors import SinkError
from inferline.io.sink_schema import conform, new_columns, widened
from inferline.io.targets import check_output

log = logging.getLogger("inferline.sinks")


def schema_file(path: str, number: int) -> str:
    """The `number`-th file of a sink at `path` (1: `path` itself).

    Example:
        >>> schema_file("out/iris.parquet", 2)
        'out/iris.schema-2.parquet'
    """
    if number == 1:
        return path
    stem, suffix = os.path.splitext(path)
    return f"{stem}.schema-{number}{suffix}"


def output_files(path: str) -> list[str]:
    """The files a Parquet/CSV sink at local `path` wrote, in order: `path`, then
    `<stem>.schema-2<suffix>`, ... (one per schema the run's models wrote)."""
    files = [path] if os.path.exists(path) else []
    return files + [p for _, p in _later_files(path) if os.path.exists(p)]


def _later_files(path: str, fs: Any = None) -> list[tuple[int, str]]:
    """(number, path) of the `schema-N` files beside `path`, by number."""
    stem, suffix = os.path.splitext(path)
    pattern = re.compile(re.escape(os.path.basename(stem)) + r"\.schema-(\d+)" + re.escape(suffix) + "$")
    folder = os.path.dirname(path)
    if fs is None:
        names = os.listdir(folder or ".") if os.path.isdir(folder or ".") else []
    else:
        names = [os.path.basename(p) for p in fs.ls(folder, detail=False)] if fs.exists(folder) else []
    found = [(int(m.group(1)), os.path.join(folder, name)) for name in names if (m := pattern.match(name))]
    return sorted(found)


class FileLayout:
    """Where a file sink's files go: `file(base, n)` is the n-th file (1: `base` itself, then
    `schema_file`), `partial(target)` what it is written as until it is renamed, `pattern()`
    the glob that reads them all. A stream's part files have their own (`io/parts.py`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def file(self, base: str, number: int) -> str:
        return schema_file(base, number)

    def partial(self, target: str) -> str:
        return target + ".partial"

    def pattern(self) -> str:
        return _glob(self.path)


class _FileSink:
    kind = "file"

    def __init__(
        self, path: str, *, setting: str = "--set sink.path={}", layout: FileLayout | None = None
    ) -> None:
        self.path = path
        # How the user sets this path (`--set dead_letter={}`), for the refusal's hint.
        self.setting = setting
        self.layout = layout or FileLayout(path)
        self._handle: IO[bytes] | None = None
        self._fs: Any = None
        self._partial = ""
        # (partial, target) of every file this run wrote; the last one is open.
        self._files: list[tuple[str, str]] = []
        self.rows = 0

    def describe(self) -> str:
        return self.path

    def open(self) -> None:
        check_output(self.layout.file(self.path, 1), self.kind, setting=self.setting)
        self._fs, _, (target,) = fsspec.get_fs_token_paths(self.path)
        parent = os.path.dirname(target)
        if parent:
            self._fs.makedirs(parent, exist_ok=True)
        self._files = []
        self._target = target
        self._open_file(self.layout.file(target, 1))

    def _open_file(self, target: str) -> None:
        partial = self.layout.partial(target)
        try:
            self._handle = self._fs.open(partial, "wb")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write ({exc})") from None
        self._partial = partial
        self._files.append((partial, target))

    def _next_file(self) -> str:
        """Finish the open file and open the next one (`schema_file`); returns its path."""
        number = len(self._files) + 1
        path = self.layout.file(self.path, number)
        check_output(path, self.kind, setting=self.setting)
        self._finish()
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        self._open_file(self.layout.file(self._target, number))
        return path

    def write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def _finish(self) -> None:
        """Subclasses close their writer here."""

    def seal(self) -> list[tuple[str, str]]:
        """Finish the open file and rename nothing: (partial, target) of every file written.
        A stream's `PartSink` renames them once they are committed."""
        if self._handle is not None:
            self._finish()
            self._handle.close()
            self._handle = None
        return list(self._files)

    def close(self) -> None:
        if self._handle is None:
            return
        self._finish()
        self._handle.close()
        self._handle = None
        for partial, target in self._files:
            self._fs.mv(partial, target)
        # A previous run's later files are not this run's output: a reader of `out*.parquet`
        # must not see them.
        for number, stale in _later_files(self._target, self._fs):
            if number > len(self._files):
                self._fs.rm(stale)

    def abort(self) -> None:
        """Close without replacing the previous output; the partial files stay for inspection."""
        if self._handle is not None:
            try:
                self._finish()  # a readable partial file; and no writer left to flush at exit
            except Exception:  # noqa: BLE001 - e.g. the disk is full: the run's error says so
                pass
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Close without replacing the previous output, and remove the partial files
        (an interrupted run: the user stopped it, nothing to inspect)."""
        self.abort()
        for partial, _ in self._files:
            try:
                self._fs.rm(partial)
            except OSError:
                pass


class ParquetSink(_FileSink):
    """Parquet; the first batch fixes the file's schema.

    A later batch without some of its columns writes nulls there; new columns (a new
    model's `scores`) start the next file with the wider schema (`schema_file`); a column
    whose type cannot be cast to the file's raises `SinkSchemaError` (the engine
    dead-letters those rows).

    Batches are gathered into row groups of `row_group_rows` rows (or `row_group_bytes`):
    one row group per engine batch made files of many small groups and cost twice the CPU
    (each group restarts dictionary encoding). Held rows are written when the file is
    finished (closed, aborted or followed by a wider one). `dictionary_columns` says which
    columns are dictionary-encoded.
    """

    kind = "parquet"
    # 64Ki rows: each group is one burst of the writer's CPU; bigger groups stalled the engine's
    # queues behind it and left a longer tail after the last batch, at no saving in CPU.
    row_group_rows = 65_536
    row_group_bytes = 64 << 20

    def __init__(
        self, path: str, *, setting: str = "--set sink.path={}", layout: FileLayout | None = None
    ) -> None:
        super().__init__(path, setting=setting, layout=layout)
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            self._schema = batch.schema
        elif batch.schema != self._schema:
            wider = widened(self._schema, batch.schema)
            fix = f"; write to another file ({self.setting.format('NEW.parquet')}) to keep both"
            # Checked before a new file starts: a type change alone never starts one.
            batch = conform(batch, wider or self._schema, where=self.path, fix=fix)
            if wider is not None:
                self._widen(wider)
        if self._writer is None:
            assert self._handle is not None
            self._writer = pq.ParquetWriter(
                self._handle,
                self._schema,
                use_dictionary=dictionary_columns(self._schema),
                write_statistics=statistics_columns(self._schema),
            )
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows or self._pending_bytes >= self.row_group_bytes:
            self._write_row_group()

    def _write_row_group(self) -> None:
        if self._writer is None or not self._pending:
            return
        pending, self._pending, self._pending_rows, self._pending_bytes = self._pending, [], 0, 0
        table = pa.Table.from_batches(pending, schema=self._writer.schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def _widen(self, wider: pa.Schema) -> None:
        assert self._schema is not None
        added = new_columns(self._schema, wider) or [
            f.name for f in wider if pa.types.is_null(self._schema.field(f.name).type)
        ]
        path = self._next_file()
        log.warning(
            "%s: new column %s: rows from here on go to %s (a Parquet file has one schema; "
            "read both with read_parquet('%s', union_by_name = true))",
            self.path,
            ", ".join(added),
            path,
            self.layout.pattern(),
        )
        self._schema = wider

    def _finish(self) -> None:
        self._write_row_group()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary encoding: flat ones but `key`. Keys are unique and nested
    columns (`scores`, embeddings) hold distinct floats: their dictionary fills a page only to
    be dropped, at a third of the sink's CPU, in every row group.

    Example:
        >>> scores = pa.list_(pa.float64())
        >>> dictionary_columns(pa.schema({"key": pa.string(), "label": pa.string(), "scores": scores}))
        ['label']
    """
    return [f.name for f in schema if f.name != "key" and not pa.types.is_nested(f.type)]


def statistics_columns(schema: pa.Schema) -> list[str]:
    """The Parquet columns (leaf paths) worth min/max statistics: all but `key`. Generated keys
    (`file:row`) sort as text, not by row, so their range prunes nothing, and comparing every
    key cost a tenth of the sink's CPU.

    Example:
        >>> statistics_columns(pa.schema({"key": pa.string(), "scores": pa.list_(pa.float64())}))
        ['scores.list.element']
    """
    return [path for f in schema if f.name != "key" for path in _leaf_paths(f.name, f.type)]


def _leaf_paths(path: str, type_: pa.DataType) -> list[str]:
    # How Arrow names the Parquet columns of nested types (compliant nested types).
    if pa.types.is_struct(type_):
        return [
            p
            for i in range(type_.num_fields)
            for p in _leaf_paths(f"{path}.{type_.field(i).name}", type_.field(i).type)
        ]
    if pa.types.is_map(type_):
        return _leaf_paths(f"{path}.key_value.key", type_.key_type) + _leaf_paths(
            f"{path}.key_value.value", type_.item_type
        )
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _leaf_paths(f"{path}.list.element", type_.value_type)
    return [path]


def _glob(path: str) -> str:
    stem, suffix = os.path.splitext(path)
    return f"{stem}*{suffix}"


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

    def __init__(
        self, path: str, *, setting: str = "--set sink.path={}", layout: FileLayout | None = None
    ) -> None:
        super().__init__(path, setting=setting, layout=layout)
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
    """CSV with a header; list and struct columns are written as JSON text.

    The first batch fixes the header; a later batch's columns are written under it by
    name (missing ones empty, types as they come: CSV is text); new columns start the next
    file with the wider header (`schema_file`).
    """

    kind = "csv"

    def __init__(
        self, path: str, *, setting: str = "--set sink.path={}", layout: FileLayout | None = None
    ) -> None:
        super().__init__(path, setting=setting, layout=layout)
        self._writer: pa_csv.CSVWriter | None = None
        self._header: list[str] | None = None
        self._con = duckdb.connect()

    def write(self, batch: pa.RecordBatch) -> None:
        batch = self._flatten(batch)
        if self._header is None:
            self._header = batch.schema.names
        elif batch.schema.names != self._header:
            added = [name for name in batch.schema.names if name not in self._header]
            if added:
                path = self._next_file()
                log.warning(
                    "%s: new column %s: rows from here on go to %s (a CSV file has one header; "
                    "read both with read_csv('%s', union_by_name = true))",
                    self.path,
                    ", ".join(added),
                    path,
                    self.layout.pattern(),
                )
                self._header = [*self._header, *added]
            batch = pa.RecordBatch.from_arrays(
                [
                    batch.column(name)
                    if batch.schema.get_field_index(name) >= 0
                    else pa.nulls(batch.num_rows, pa.string())
                    for name in self._header
                ],
                names=self._header,
            )
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
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
