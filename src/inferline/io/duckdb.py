"""DuckDB table sink (upsert on `key`) and table source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import InputError, SinkError
from inferline.io.base import SourceBatch


def quote(name: str) -> str:
    """A DuckDB identifier, quoted; `schema.table` names are quoted part by part."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


class DuckDBSink:
    """Writes batches into a DuckDB table, creating it on first write; upserts on `key`.

    Each `commit()` ends a transaction, so an error later in a run loses nothing that
    was committed before it.

    Example:
        >>> sink = DuckDBSink("warehouse.duckdb", "iris_predictions")
    """

    def __init__(self, path: str, table: str, *, key: str = "key") -> None:
        self.path = path
        self.table = table
        self.key = key
        self._con: duckdb.DuckDBPyConnection | None = None
        self._columns: dict[str, str] | None = None
        self._in_transaction = False

    def describe(self) -> str:
        return f"{self.path} table {self.table}"

    def open(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise SinkError(f"{self.path}: cannot open DuckDB database ({exc})") from None
        if "." in self.table:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.table.split('.')[0])}")
        self._columns = self._existing_columns()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("DuckDBSink used before open()")
        return self._con

    def _existing_columns(self) -> dict[str, str] | None:
        schema, _, table = self.table.rpartition(".")
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? AND (? = '' OR table_schema = ?) ORDER BY ordinal_position",
            [table, schema, schema],
        ).fetchall()
        return {name: dtype for name, dtype in rows} or None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = _dedupe_last(batch, self.key)
        con = self.con
        con.register("_inferline_batch", batch)
        try:
            incoming = {
                name: dtype for name, dtype, *_ in con.execute("DESCRIBE _inferline_batch").fetchall()
            }
            if self._columns is None:
                self._create(incoming)
            else:
                self._check_compatible(incoming)
            if not self._in_transaction:
                con.execute("BEGIN TRANSACTION")
                self._in_transaction = True
            names = ", ".join(quote(n) for n in incoming)
            con.execute(
                f"INSERT OR REPLACE INTO {quote(self.table)} ({names}) SELECT {names} FROM _inferline_batch"
            )
        finally:
            con.unregister("_inferline_batch")

    def _create(self, incoming: dict[str, str]) -> None:
        if self.key not in incoming:
            raise SinkError(f"{self.path} table {self.table}: results have no {self.key!r} column")
        columns = ", ".join(f"{quote(n)} {t}" for n, t in incoming.items())
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({columns}, PRIMARY KEY ({quote(self.key)}))"
        )
        self._columns = dict(incoming)

    def _check_compatible(self, incoming: dict[str, str]) -> None:
        assert self._columns is not None
        for name, dtype in incoming.items():
            existing = self._columns.get(name)
            if existing is None:
                raise SinkError(
                    f"{self.path} table {self.table}: existing table has no column {name!r} "
                    f"({dtype}) that this pipeline writes; drop the table or write to another "
                    "(--set sink.table=NAME)"
                )
            if existing != dtype and not _castable(dtype, existing):
                raise SinkError(
                    f"{self.path} table {self.table}: column {name!r} is {existing} in the existing "
                    f"table but this pipeline writes {dtype}; drop the table or write to another "
                    "(--set sink.table=NAME)"
                )

    def commit(self) -> None:
        if self._in_transaction:
            self.con.execute("COMMIT")
            self._in_transaction = False

    def rollback(self) -> None:
        if self._in_transaction and self._con is not None:
            self._con.execute("ROLLBACK")
            self._in_transaction = False

    def close(self) -> None:
        if self._con is not None:
            self.rollback()
            self._con.close()
            self._con = None


_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE", "HUGEINT")


def _castable(source: str, target: str) -> bool:
    # Widening numeric casts are fine (an int32 batch into a BIGINT column).
    return source in _NUMERIC and target in _NUMERIC and _NUMERIC.index(source) <= _NUMERIC.index(target)


def _dedupe_last(batch: pa.RecordBatch, key: str) -> pa.RecordBatch:
    # DuckDB refuses to upsert the same key twice in one statement; keep the last row.
    if key not in batch.schema.names:
        return batch
    keys = batch.column(key)
    if pc.count_distinct(keys).as_py() == len(keys):
        return batch
    table = pa.Table.from_batches([batch]).append_column(
        "__i__", pa.array(range(batch.num_rows), type=pa.int64())
    )
    last = table.group_by(key).aggregate([("__i__", "max")]).column("__i___max")
    # The row numbers themselves, in order (not the order of the groups).
    taken = table.take(pc.take(last, pc.sort_indices(last))).drop_columns(["__i__"])
    return taken.combine_chunks().to_batches()[0]


class TableSource:
    """Rows of a DuckDB table or query (`table:` may be a name or a SELECT)."""

    bounded = True

    def __init__(self, path: str, table: str, *, batch_rows: int = 4096) -> None:
        self.path = path
        self.table = table
        self.batch_rows = batch_rows
        self._con: duckdb.DuckDBPyConnection | None = None

    def open(self) -> None:
        if not os.path.exists(self.path):
            raise InputError(f"source {self.path}: DuckDB database not found")
        self._con = duckdb.connect(self.path, read_only=True)

    def total_bytes(self) -> int | None:
        return None

    def ack(self, position: Any) -> None:
        """Tables need no acknowledgement."""

    def batches(self) -> Iterator[SourceBatch]:
        assert self._con is not None
        query = (
            self.table
            if self.table.lstrip().lower().startswith("select")
            else f"SELECT * FROM {quote(self.table)}"
        )
        try:
            reader = self._con.sql(query).to_arrow_reader(self.batch_rows)
        except duckdb.Error as exc:
            raise InputError(f"source {self.path} table {self.table}: {exc}".splitlines()[0]) from None
        row = 0
        from inferline.io.files import row_keys

        for batch in reader:
            yield SourceBatch(data=batch, keys=row_keys(f"{self.path}#{self.table}", row, batch.num_rows))
            row += batch.num_rows

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
