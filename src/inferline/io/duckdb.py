"""DuckDB table sink (upsert on `key`).

The table source is `io/duckdb_source.py`; identifier quoting and error text, `io/duckdb_sql.py`
(both importable from here too).
"""

from __future__ import annotations

import logging

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SinkError, SinkSchemaError
from inferline.io import warehouse_writer
from inferline.io.duckdb_source import TableSource
from inferline.io.duckdb_sql import quote, root_cause
from inferline.io.key_index import TableKeys, key_hashes
from inferline.io.targets import check_output
from inferline.io.warehouse import WarehouseError

__all__ = ["DuckDBSink", "TableSource", "quote", "root_cause"]

log = logging.getLogger("inferline.sinks")


class DuckDBSink:
    """Writes batches into a DuckDB table, creating it on first write; upserts on `key`.

    Each `commit()` ends a transaction, so an error later in a run loses nothing that
    was committed before it. The file is held only from a write to its commit (a turn of
    this process's `WarehouseWriter`), so other processes can read it while a stream runs.
    New tables get no index (a PRIMARY KEY on a text key was 3/4 of the file): this process
    keeps the hashes of the table's keys (`io/key_index.py`), a batch of new keys is a plain
    INSERT and a batch with known keys replaces those rows. A table made with a PRIMARY KEY
    (or UNIQUE) on `key` keeps using it: a plain INSERT, and INSERT OR REPLACE when the
    index refuses a key.

    Example:
        >>> sink = DuckDBSink("warehouse.duckdb", "iris_predictions")
    """

    def __init__(
        self, path: str, table: str, *, key: str = "key", setting: str = "--set sink.path={}"
    ) -> None:
        self.path = path
        self.table = table
        self.key = key
        self.setting = setting
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer: warehouse_writer.WarehouseWriter | None = None
        self._holding = False  # inside a turn of the writer (from a write to its commit)
        self._columns: dict[str, str] | None = None
        self._transaction = _Transaction()
        self._owner: DuckDBSink | None = None  # the sink whose cursor and transactions this one shares
        self._checked: pa.Schema | None = None  # the last batch schema found compatible
        self._names = ""
        self._name_list: list[str] = []
        self._unique_key = False  # the table has a PRIMARY KEY/UNIQUE on exactly `key`
        self._keys: TableKeys | None = None  # the keys' hashes, for a table without such an index
        self._replace_by_delete = False
        self._writes_every_column = False
        self._backoff = 0  # batches upserted without trying _insert_new after its last refusal
        self._skip_inserts = 0  # of those, still to come

    def describe(self) -> str:
        return f"{self.path} table {self.table}"

    @property
    def _in_transaction(self) -> bool:
        return self._transaction.open

    @_in_transaction.setter
    def _in_transaction(self, value: bool) -> None:
        self._transaction.open = value

    def join(self, owner: DuckDBSink) -> bool:
        """Write in `owner`'s transactions from now on, if both write the same file: one commit.

        A stream's dead letters beside its results cost one COMMIT (a WAL sync) a batch, not
        two, and a batch's results and dead letters land together or not at all. Both sinks
        still `commit()`: whichever comes first commits what both wrote. Returns whether it
        joined (not for another file, nor inside a transaction of its own).
        """
        if (
            self._writer is None
            or self._writer is not owner._writer
            or owner._con is None
            or self._in_transaction
            or self._owner is not None
        ):
            return False
        if self._con is not None:
            self._con.close()
        self._con, self._transaction, self._owner = owner._con, owner._transaction, owner
        return True

    def open(self) -> None:
        check_output(self.path, "duckdb", setting=self.setting)
        writer = self._writer = warehouse_writer.acquire(self.path)
        self._con = writer.cursor()
        try:
            self._hold()
            if "." in self.table:
                self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.table.split('.')[0])}")
            self._columns = self._existing_columns()
            self._unique_key = self._columns is not None and self._has_unique_key()
        except BaseException:
            self.close()
            raise
        self._let_go()
        if self._columns is not None and not self._unique_key:
            # A big table's key hashes take seconds to read (10M rows): in a read turn, beside
            # readers, not in the first write's turn, which would hold every reader up.
            self._keys = TableKeys(quote(self.table), quote(self.key))
            try:
                writer.read(self._keys.sync)
            except WarehouseError as exc:
                self.close()
                raise SinkError(str(exc)) from None
            except duckdb.Error as exc:
                self.close()
                raise SinkError(f"{self.describe()}: cannot read its keys ({root_cause(exc)})") from None
            except BaseException:
                self.close()
                raise

    def _hold(self) -> None:
        if not self._holding and self._writer is not None:
            # A joined sink's owner in this turn already pointed the shared cursor at the file.
            use = self._owner is None or not self._owner._holding
            try:
                self._writer.begin(self.con, use=use)
            except WarehouseError as exc:
                raise SinkError(str(exc)) from None
            self._holding = True

    def _let_go(self) -> None:
        if self._holding and self._writer is not None:
            self._holding = False
            self._writer.end()

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

    def _has_unique_key(self) -> bool:
        schema, _, table = self.table.rpartition(".")
        rows = self.con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = ? AND (? = '' OR schema_name = ?) "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
            [table, schema, schema],
        ).fetchall()
        return any(columns == [self.key] for (columns,) in rows)

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = _dedupe_last(batch, self.key)
        con = self.con
        self._hold()
        con.register("_inferline_batch", batch)
        try:
            if self._checked is None or not batch.schema.equals(self._checked):
                self._check(batch)
            table, names = quote(self.table), self._names
            select = f"INTO {table} ({names}) SELECT {names} FROM _inferline_batch"
            if not self._in_transaction and self._insert_new(f"INSERT {select}"):
                return
            if not self._in_transaction:
                con.execute("BEGIN TRANSACTION")
                self._in_transaction = True
            if self._keys is not None:
                self._upsert_by_hashes(self._keys, table, batch.num_rows)
            elif self._replace_by_delete:
                key = quote(self.key)
                con.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM _inferline_batch)")
                con.execute(f"INSERT {select}")
            else:
                con.execute(f"INSERT OR REPLACE {select}")
        except duckdb.Error as exc:  # a full disk, a read-only file: say that, in one line
            raise SinkError(f"{self.describe()}: cannot write ({root_cause(exc)})") from None
        finally:
            con.unregister("_inferline_batch")

    def _upsert_by_hashes(self, keys: TableKeys, table: str, rows: int) -> None:
        """Upsert into a table without an index: only a batch with known keys scans the table."""
        con, key, names = self.con, quote(self.key), self._names
        keys.sync(con)
        hashes = key_hashes(con, f"SELECT hash({key}) FROM _inferline_batch")
        insert = f"INSERT INTO {table} ({names}) SELECT {names} FROM _inferline_batch"
        if not keys.contains(hashes).any():
            con.execute(insert).fetchall()
            new = rows
        elif self._writes_every_column:
            ((deleted,),) = con.execute(
                f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM _inferline_batch)"
            ).fetchall()
            con.execute(insert).fetchall()
            new = rows - int(deleted)
        else:
            # Columns this pipeline does not write keep their values, as INSERT OR REPLACE did.
            others = [n for n in self._name_list if n != key]
            if others:
                sets = ", ".join(f"{n} = b.{n}" for n in others)
                con.execute(
                    f"UPDATE {table} AS __inferline_t SET {sets} FROM _inferline_batch AS b "
                    f"WHERE __inferline_t.{key} = b.{key}"
                ).fetchall()
            ((new,),) = con.execute(f"{insert} WHERE {key} NOT IN (SELECT {key} FROM {table})").fetchall()
        keys.wrote(hashes, int(new))

    def _check(self, batch: pa.RecordBatch) -> None:
        # DESCRIBE only when the Arrow schema changes: the same schema maps to the same types.
        rows = self.con.execute("DESCRIBE _inferline_batch").fetchall()
        incoming = {name: dtype for name, dtype, *_ in rows}
        if self.key not in incoming:
            raise SinkError(f"{self.path} table {self.table}: results have no {self.key!r} column")
        columns = self._create(incoming) if self._columns is None else self._check_compatible(incoming)
        self._name_list = [quote(n) for n in incoming]
        self._names = ", ".join(self._name_list)
        self._checked = batch.schema
        # Replacing known keys: INSERT OR REPLACE updates rows of plain columns in place, far
        # faster than DELETE + INSERT, but with a LIST/ARRAY/MAP column it measured ~2x slower
        # than an explicit DELETE + INSERT (bench/duckdb_sink.py). That is the same upsert only
        # when the batch writes every column (OR REPLACE leaves the others as they were).
        nested = any("[" in dtype or dtype.startswith("MAP") for dtype in columns.values())
        self._writes_every_column = set(incoming) == set(columns)
        self._replace_by_delete = nested and self._writes_every_column
        if not self._unique_key and self._keys is None:
            self._keys = TableKeys(quote(self.table), quote(self.key))

    def _insert_new(self, insert: str) -> bool:
        """A plain INSERT in a transaction of its own; False (rolled back) if a key exists.

        The table's unique index rejects any key already there, so when this succeeds it
        is the upsert, several times cheaper than INSERT OR REPLACE (whose cost grows with
        the table). After a rejection (a re-run, redelivered messages) the next 1, 2, 4 ...
        64 batches go straight to the upsert, so a re-run pays for few failed attempts.
        """
        if not self._unique_key:
            return False
        if self._skip_inserts > 0:
            self._skip_inserts -= 1
            return False
        con = self.con
        con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            con.execute(insert)
        except duckdb.ConstraintException:
            # A failed statement aborts the transaction, which held this batch only.
            con.execute("ROLLBACK")
            self._in_transaction = False
            self._backoff = min(2 * self._backoff or 1, 64)
            self._skip_inserts = self._backoff
            return False
        self._backoff = 0
        return True

    def _create(self, incoming: dict[str, str]) -> dict[str, str]:
        columns = ", ".join(f"{quote(n)} {t}" for n, t in incoming.items())
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({columns})")
        self._columns = dict(incoming)
        self._unique_key = self._has_unique_key()
        return self._columns

    def _check_compatible(self, incoming: dict[str, str]) -> dict[str, str]:
        columns = self._columns or {}
        for name, dtype in incoming.items():
            existing = columns.get(name)
            if existing is not None and existing != dtype and not _castable(dtype, existing):
                raise SinkSchemaError(
                    f"{self.path} table {self.table}: column {name!r} is {existing} in the existing "
                    f"table but this pipeline writes {dtype}; drop the table or write to another "
                    "(--set sink.table=NAME)"
                )
        for name, dtype in incoming.items():
            if name not in columns:
                # A new model may write a new column (scores): the table grows a nullable one;
                # rows written before have NULL there, as do columns a batch does not write.
                self.con.execute(f"ALTER TABLE {quote(self.table)} ADD COLUMN {quote(name)} {dtype}")
                columns[name] = dtype
                log.warning("%s table %s: added column %s (%s)", self.path, self.table, name, dtype)
        return columns

    def commit(self) -> None:
        if self._in_transaction:
            # A failed COMMIT ends the transaction too: never ROLLBACK it again afterwards.
            self._in_transaction = False
            try:
                self.con.execute("COMMIT")
            except duckdb.Error as exc:
                if self._keys is not None:
                    self._keys.forget()
                self._let_go()
                raise SinkError(f"{self.describe()}: cannot commit ({root_cause(exc)})") from None
        self._let_go()

    def rollback(self) -> None:
        if self._in_transaction and self._con is not None:
            self._in_transaction = False
            if self._keys is not None:
                self._keys.forget()
            try:
                self._con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed statement already ended it; the error that did is the one to report
        self._let_go()

    def close(self) -> None:
        try:
            if self._con is not None:
                if self._owner is None or self._owner._con is not None:
                    self.rollback()
                if self._owner is None:
                    self._con.close()  # a joined sink's cursor is its owner's to close
                self._con = None
        finally:
            self._let_go()
            if self._writer is not None:
                writer, self._writer = self._writer, None
                warehouse_writer.release(writer)


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


class _Transaction:
    """Whether a cursor is inside a transaction, shared by the sinks that write through it."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = False
