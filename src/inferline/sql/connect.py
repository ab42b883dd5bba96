"""`inferline.sql.connect()`: a DuckDB connection with inferline's functions and statements.

    con = inferline.sql.connect("warehouse.duckdb", store="model_store")
    con.sql("SELECT predict('iris', a, b, c, d) FROM flowers").show()
    con.sql("SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT * FROM flowers))").show()

The returned `SqlConnection` behaves as the DuckDB connection it wraps (every other
attribute is DuckDB's); `sql()`/`execute()` also accept BigQuery-ML statements and
scripts of several statements. `.raw` is the DuckDB connection, on which `predict()`,
`predict_scores()`, `predict_label()` and `decode_image()` work too.

A database file is opened as a turn at the warehouse (`io/warehouse.py`): a stream writing
it waits while the connection is open, so close it (or use `with`) when done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from inferline.errors import InferlineError, SqlError
from inferline.io.warehouse import Session, WarehouseError
from inferline.sql import batching, bigquery, functions, fused, objects
from inferline.sql.resolver import ModelResolver


@dataclass
class Result:
    """The last statement of a script: its number and DuckDB relation (None for DDL)."""

    number: int
    relation: duckdb.DuckDBPyRelation | None


class SqlConnection:
    """A DuckDB connection that also runs BigQuery-ML statements; see `connect()`."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, *, store: str | None = None, session: Session | None = None
    ) -> None:
        self.con = con
        self.store = store
        self.session = session
        self.errors: list[InferlineError] = []
        self.resolver = ModelResolver(con, store=store)

    @property
    def raw(self) -> duckdb.DuckDBPyConnection:
        """The wrapped DuckDB connection."""
        return self.con

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    def __enter__(self) -> SqlConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.resolver.close()
        if self.session is not None:
            self.session.close()  # detaches the file and ends this process's turn
        else:
            self.con.close()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation | None:
        """Run a script (one or more statements); the last one's relation, as DuckDB's `sql()`."""
        return self.run_script(query).relation

    def execute(self, query: str, parameters: object = None) -> SqlConnection:
        """DB-API style: translate BigQuery-ML if needed, then `execute` on DuckDB."""
        if bigquery.is_bigquery_ml(query, self.con):
            if parameters:
                raise SqlError(
                    "statement 1: query parameters (?, $1) are not supported with BigQuery-ML statements; "
                    "put the values in the SQL or use predict(...)"
                )
            statements = self._translate(1, query)
            for statement in statements[:-1]:
                self.con.execute(statement).fetchall()
            if statements:
                self.con.execute(statements[-1], parameters)
            return self
        self.con.execute(fused.fuse_native_calls(batching.batch_predict_scans(query, self.con)), parameters)
        return self

    def run_script(self, script: str) -> Result:
        """Run each statement in order; errors name the statement's number."""
        statements = split_statements(script)
        if not statements:
            raise SqlError("no SQL statement given")
        relation: duckdb.DuckDBPyRelation | None = None
        for number, text in enumerate(statements, start=1):
            relation = None
            if bigquery.is_bigquery_ml(text, self.con):
                translated = self._translate(number, text)
            else:  # predict(...) over an object table: read it in full chunks (sql/batching.py)
                translated = [fused.fuse_native_calls(batching.batch_predict_scans(text, self.con))]
            for query in translated:
                relation = self._run(number, query)
        return Result(number=len(statements), relation=relation)

    def fetch(self, result: Result) -> pa.Table | None:
        """The last statement's rows as Arrow; errors name the statement."""
        if result.relation is None:
            return None
        self.errors.clear()
        try:
            return result.relation.to_arrow_table()
        except duckdb.Error as exc:
            raise self._error(result.number, exc) from None

    def _translate(self, number: int, text: str) -> list[str]:
        try:
            return bigquery.translate(text, self)
        except InferlineError as exc:
            raise SqlError(f"statement {number}: {exc}") from None
        except duckdb.Error as exc:
            raise self._error(number, exc) from None

    def _run(self, number: int, query: str) -> duckdb.DuckDBPyRelation | None:
        self.errors.clear()
        try:
            return self.con.sql(query)
        except duckdb.Error as exc:
            raise self._error(number, exc) from None

    def _error(self, number: int, exc: duckdb.Error) -> SqlError:
        if self.errors:
            return SqlError(f"statement {number}: {self.errors[-1]}")
        return SqlError(f"statement {number}: {str(exc).splitlines()[0]}")


def split_statements(script: str) -> list[str]:
    """Statements of a script, split on `;` outside strings and comments (DuckDB's tokenizer)."""
    cuts = [
        pos
        for pos, kind in duckdb.tokenize(script)
        if kind == duckdb.token_type.operator and script[pos] == ";"
    ]
    pieces, start = [], 0
    for cut in [*cuts, len(script)]:
        pieces.append(script[start:cut])
        start = cut + 1
    return [p.strip() for p in pieces if _has_code(p)]


def _has_code(text: str) -> bool:
    return any(kind != duckdb.token_type.comment for _, kind in duckdb.tokenize(text))


def connect(db: str = ":memory:", *, store: str | None = None, read_only: bool = False) -> SqlConnection:
    """Open `db` (a DuckDB file, or in memory) with inferline's SQL functions registered.

    `store` is a model store folder; models not in the database's catalog (`CREATE MODEL`)
    are looked up there by name.

    Example:
        >>> con = connect()
        >>> con.sql("SELECT 1 AS one").fetchall()
        [(1,)]
    """
    turn: Session | None = None
    if db.startswith(":memory:"):
        con = duckdb.connect(db)
    else:
        turn = Session(db, read_only=read_only, what="the query")
        try:
            con = turn.open()
        except WarehouseError as exc:
            raise SqlError(str(exc)) from None
    session = SqlConnection(con, store=store, session=turn)
    try:
        functions.register(con, session.resolver, session.errors)
        objects.restore_filesystems(con)
    except BaseException:
        session.close()
        raise
    return session


# First words of statements that only read: a script of these opens the file read-only, so
# it shares the warehouse with other readers (a stream writing it waits only for the query).
_READING = {"select", "with", "from", "values", "table", "show", "describe", "desc", "summarize", "explain"}


_WRITING = {"insert", "update", "delete"}  # after WITH ... AS (...)


def reads_only(script: str) -> bool:
    """True when every statement of `script` only reads (SELECT, ML.PREDICT, SHOW ...)."""
    try:
        statements = split_statements(script)
    except (duckdb.Error, RuntimeError):
        return False
    for text in statements:
        words = [
            text[pos:].split(None, 1)[0].lower()
            for pos, kind in duckdb.tokenize(text)
            if kind == duckdb.token_type.keyword or kind == duckdb.token_type.identifier
        ]
        if not words or words[0] not in _READING:
            return False
        if words[0] == "with" and _WRITING.intersection(words):
            return False
    return True
