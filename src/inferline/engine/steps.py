"""Transform steps around the model: `sql:` (DuckDB over each batch) and `map:` (a Python
function over an Arrow batch).

Each step sees one batch as the table `input`. Row keys travel with the rows: a row-wise
SQL step is rewritten to carry the hidden key column through, so filters keep the right
keys; a `map:` function that changes the number of rows must return a `key` column.

Example:
    >>> step = SqlStep("SELECT a, a * 2 AS b FROM input WHERE a > 1")
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from inferline.errors import InferlineError, SpecError

KEY_COLUMN = "__inferline_key__"
_NOT_ROW_WISE = {
    "Group": "GROUP BY",
    "Order": "ORDER BY",
    "Limit": "LIMIT",
    "Window": "a window function",
    "Distinct": "DISTINCT",
    "Join": "a JOIN",
    "AggFunc": "an aggregate",
    "Union": "UNION",
    "Offset": "OFFSET",
}


class StepError(SpecError):
    """A step is misconfigured (bad SQL, unknown function, not row-wise on a stream)."""


class StepFailed(InferlineError, RuntimeError):
    """A step raised on a batch; the engine dead-letters that batch's rows."""


class SqlStep:
    """A DuckDB SELECT over the batch, registered as `input`; must be row-wise.

    Row-wise means every output row comes from one input row (projections, filters,
    expressions), which is what makes running it per batch equal to running it on the
    whole input, and what lets it run on a never-ending stream.
    """

    def __init__(self, query: str, *, where: str = "steps") -> None:
        self.query = query
        self.where = where
        self._rewritten: str | None = None
        # Predict workers run steps concurrently; a DuckDB connection serves one at a time.
        self._local = threading.local()

    def open(self) -> None:
        self._rewritten = _with_key(self.query, self.where)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect()
            self._local.con = con
        return con

    def __call__(self, data: pa.RecordBatch, keys: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
        if self._rewritten is None:
            self.open()
        assert self._rewritten is not None
        con = self._connection()
        table = pa.Table.from_batches([data]).append_column(KEY_COLUMN, keys)
        con.register("input", table)
        try:
            result = con.sql(self._rewritten).to_arrow_table()
        except duckdb.Error as exc:
            raise StepError(f"{self.where}: sql step failed: {str(exc).splitlines()[0]}") from None
        finally:
            con.unregister("input")
        out_keys = result.column(KEY_COLUMN).combine_chunks()
        result = result.drop_columns([KEY_COLUMN]).combine_chunks()
        batches = result.to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=result.schema)
        return batch, out_keys


def _with_key(query: str, where: str) -> str:
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:  # pragma: no cover - sqlglot is a core dependency
        raise StepError(f"{where}: sql steps need sqlglot: pip install 'inferline[sql]'") from None
    try:
        tree = sqlglot.parse_one(query, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise StepError(f"{where}: cannot parse sql step {query!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, exp.Select):
        raise StepError(f"{where}: a sql step must be one SELECT ... FROM input, got {query!r}")
    for name, label in _NOT_ROW_WISE.items():
        node_type = getattr(exp, name)
        if tree.find(node_type) is not None:
            raise StepError(
                f"{where}: sql step {query!r} uses {label}; steps run on each batch (and on streams "
                "that never end), so only row-wise SELECTs (columns, expressions, WHERE) are allowed; "
                "run aggregates with `inferline sql` over the output table"
            )
    tables = {t.name for t in tree.find_all(exp.Table)}
    if tables != {"input"}:
        raise StepError(f"{where}: a sql step must read FROM input only, got {', '.join(sorted(tables))}")
    if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and e.is_star) for e in tree.expressions):
        return tree.sql(dialect="duckdb")  # `*` already carries the key column
    return tree.select(exp.column(KEY_COLUMN), copy=True).sql(dialect="duckdb")


class MapStep:
    """`map: package.module:function`, called as `function(batch) -> batch`."""

    def __init__(self, target: str, *, where: str = "steps") -> None:
        self.target = target
        self.where = where
        self._function: Callable[[pa.RecordBatch], Any] | None = None

    def open(self) -> None:
        self._function = load_object(self.target, where=self.where)

    def __call__(self, data: pa.RecordBatch, keys: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
        if self._function is None:
            self.open()
        assert self._function is not None
        try:
            result = self._function(data)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise StepFailed(f"{self.where}: map {self.target} failed: {message}") from exc
        if isinstance(result, pa.Table):
            result = result.combine_chunks()
            batches = result.to_batches()
            result = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=result.schema)
        if not isinstance(result, pa.RecordBatch):
            raise StepError(
                f"{self.where}: map {self.target} returned {type(result).__name__}, "
                "expected a pyarrow RecordBatch"
            )
        if "key" in result.schema.names:
            return result.drop_columns(["key"]), result.column("key").cast(pa.string())
        if result.num_rows != data.num_rows:
            raise StepError(
                f"{self.where}: map {self.target} changed the number of rows ({data.num_rows} -> "
                f"{result.num_rows}); return a 'key' column so each row keeps its key"
            )
        return result, keys


Step = SqlStep | MapStep


def load_object(target: str, *, where: str) -> Any:
    """Import `package.module:name`, with an error naming the spec place on failure."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise StepError(f"{where}: {target!r} should look like package.module:name")
    # Like uvicorn's --app-dir ".": user modules next to the pipeline import without packaging.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepError(f"{where}: cannot import {module_name!r} for {target} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise StepError(f"{where}: module {module_name!r} has no {attr!r} (from {target})") from None


def build_steps(raw: list[dict[str, Any]], *, origin: str) -> tuple[list[Step], list[Step]]:
    """Steps before and after the model, from the spec's `steps:` list.

    Each entry is `{sql: QUERY}` or `{map: module:function}`, optionally with `at: after`
    to run on the results instead of the source rows.
    """
    before: list[Step] = []
    after: list[Step] = []
    for index, entry in enumerate(raw):
        where = f"{origin}: steps[{index}]"
        if not isinstance(entry, dict):
            raise StepError(f"{where}: expected a mapping like {{sql: ...}} or {{map: ...}}")
        unknown = set(entry) - {"sql", "map", "at"}
        kinds = [k for k in ("sql", "map") if k in entry]
        if unknown or len(kinds) != 1:
            raise StepError(
                f"{where}: expected exactly one of sql: or map: (and optional at:), got {sorted(entry)}"
            )
        at = entry.get("at", "before")
        if at not in ("before", "after"):
            raise StepError(f"{where}: at: must be before or after, got {at!r}")
        step: Step = (
            SqlStep(str(entry["sql"]), where=where)
            if kinds[0] == "sql"
            else MapStep(str(entry["map"]), where=where)
        )
        step.open()
        (after if at == "after" else before).append(step)
    return before, after


def apply_steps(steps: list[Step], data: pa.RecordBatch, keys: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
    for step in steps:
        data, keys = step(data, keys)
    return data, keys
