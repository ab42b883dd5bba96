"""DuckDB table source: the rows of a table or query (`source: {kind: table}`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import duckdb

from inferline.errors import InputError
from inferline.io.base import SourceBatch
from inferline.io.duckdb_sql import quote
from inferline.io.warehouse import Session, WarehouseError


class TableSource:
    """Rows of a DuckDB table or query (`table:` may be a name or a SELECT)."""

    bounded = True

    def __init__(self, path: str, table: str, *, batch_rows: int = 4096) -> None:
        self.path = path
        self.table = table
        self.batch_rows = batch_rows
        self._con: duckdb.DuckDBPyConnection | None = None
        self._session: Session | None = None

    def open(self) -> None:
        if not os.path.exists(self.path):
            raise InputError(f"source {self.path}: DuckDB database not found")
        # A read turn for the whole run: a stream writing this file waits until the run ends.
        self._session = Session(self.path, read_only=True, what="the run", long=True)
        try:
            self._con = self._session.open()
        except WarehouseError as exc:
            raise InputError(f"source {exc}") from None

    def progress_total(self) -> int | None:
        """Rows of a table (DuckDB knows them cheaply); None for a query (it would run twice)."""
        if self._con is None or self.table.lstrip().lower().startswith("select"):
            return None
        try:
            ((count,),) = self._con.sql(f"SELECT count(*) FROM {quote(self.table)}").fetchall()
        except duckdb.Error:
            return None  # batches() reports the missing table in its own words
        return int(count)

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
            keys = row_keys(f"{self.path}#{self.table}", row, batch.num_rows)
            row += batch.num_rows
            yield SourceBatch(data=batch, keys=keys, progress=row)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
            self._con = None
