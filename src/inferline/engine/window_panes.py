"""Partial aggregates for `window:`: open windows kept as panes, not as rows.

A 60 s window sliding every 10 s counts each row in 6 windows. When every aggregate is
decomposable — `count`, `count_if`, `sum`, `min`, `max`, and `avg` as a sum over a count,
inside any scalar expression — a batch of rows is reduced (by Arrow's group_by for plain
columns, else one GROUP BY) to a few partial rows, one per (first window, last window,
group): the rows of a pane (an aligned stretch of `gcd(size, every)`) count in the same
windows, and so do a late row's, whose first window is later. A closing window combines
the partials that count in it. The open state is then panes x groups rows, whatever the
rate. Anything else (`list`, `quantile`, `count(DISTINCT ...)`, FILTER, an unknown
function that may be an aggregate) keeps the rows (`engine/windows.py`).

Example:
    >>> plan = pane_plan({"n": "count(*)", "mean": "avg(score)"}, group_by=["cls"])
    >>> plan.partials
    {'__p0': 'COUNT(*)', '__p1': 'SUM(score)', '__p2': 'COUNT(score)'}
    >>> plan.finals["mean"]
    'CAST(SUM(__p1) AS DOUBLE) / NULLIF(CAST(SUM(__p2) AS BIGINT), 0)'
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc
import sqlglot
from sqlglot import exp

from inferline.engine.window_sql import cast_aggregates, simple_call
from inferline.errors import WindowError
from inferline.io.duckdb import quote

PANES = "window_panes"
KEYS = "window_pane_keys"  # per batch: its message keys, for a replay after a SIGKILL
PLAN = "window_pane_plan"  # the aggregates as run, so a restart rebuilds the same plan
_BATCH = "_inferline_window_batch"
_PARTIALS = "_inferline_window_partials"
_MERGE_AFTER = 1_000  # partial rows added since the last merge (tiny batches add one each)
# How each partial's rows combine: into a window (`final`) and into one partial (`merge`).
_COMBINE = {"count": "CAST(SUM({}) AS BIGINT)", "count_if": "SUM({})", "sum": "SUM({})"}
_COMBINE |= {"min": "MIN({})", "max": "MAX({})"}
_ARROW = {"count": "count", "sum": "sum", "min": "min", "max": "max"}  # pyarrow's names
_SIMPLE_KINDS = frozenset({"count", "count_if", "sum", "min", "max", "avg"})
# Nodes that end the plan: the aggregate needs its rows (or may; an unknown function).
_REFUSED = (exp.Anonymous, exp.Window, exp.Filter, exp.Distinct, exp.Subquery, exp.Select, exp.Order)


@dataclass(frozen=True)
class PanePlan:
    """`partials`: column -> aggregate over rows; `merges`: column -> combining partial rows;
    `finals`: output aggregate -> expression over partial rows; `arrow`: column -> (source
    column or None, pyarrow aggregate) when every partial is a plain column's (Arrow's
    group_by reduces a batch without a query)."""

    partials: dict[str, str]
    merges: dict[str, str]
    finals: dict[str, str]
    arrow: dict[str, tuple[str | None, str]] | None


def pane_plan(aggregates: Mapping[str, str], *, group_by: Sequence[str]) -> PanePlan | None:
    """The partial aggregates of `aggregates`, or None when one of them needs the rows."""
    partials: dict[str, str] = {}
    merges: dict[str, str] = {}
    finals: dict[str, str] = {}
    arrow: dict[str, tuple[str | None, str]] = {}
    plain = True

    def partial(kind: str, inner: str, source: str | None) -> str:
        """The combined partial `kind(inner)` (`source`: the plain column it reads, if one)."""
        nonlocal plain
        sql = f"{kind.upper()}({inner})"
        column = next((c for c, s in partials.items() if s == sql), None)
        if column is None:
            column = f"__p{len(partials)}"
            partials[column] = sql
            merges[column] = _COMBINE[kind].format(column)
            if inner == "*":
                arrow[column] = (None, "count_all")
            elif source is not None and kind in _ARROW:
                arrow[column] = (source, _ARROW[kind])
            else:
                plain = False
        return _COMBINE[kind].format(column)

    def parsed(kind: str, argument: exp.Expr | None) -> exp.Expr:
        if argument is None or isinstance(argument, exp.Star):
            return sqlglot.parse_one(partial(kind, "*", None), read="duckdb")
        plain_column = isinstance(argument, exp.Column) and not argument.table
        source = argument.name if plain_column else None
        return sqlglot.parse_one(partial(kind, argument.sql(dialect="duckdb"), source), read="duckdb")

    for name, expression in aggregates.items():
        simple = simple_call(expression)
        if simple is not None and simple[0] in _SIMPLE_KINDS:
            # `avg(score)`: no parser needed (sqlglot's first DuckDB parse costs ~0.1 s).
            kind, argument = simple
            source = None if argument == "*" else argument
            if kind == "avg" and source is not None:
                total, count = partial("sum", argument, source), partial("count", argument, source)
                finals[name] = f"CAST({total} AS DOUBLE) / NULLIF({count}, 0)"
                continue
            if argument != "*" or kind == "count":
                finals[name] = partial(kind, argument, source)
                continue
        try:
            tree = sqlglot.parse_one(expression, read="duckdb")
        except sqlglot.errors.SqlglotError:
            return None
        if any(isinstance(node, _REFUSED) for node in tree.walk()):
            return None
        functions = list(tree.find_all(exp.AggFunc))
        if not functions or any(f.find_ancestor(exp.AggFunc) is not None for f in functions):
            return None  # no aggregate, or one inside another: DuckDB says what is wrong
        for function in functions:
            combined = _combine(function, parsed)
            if combined is None:
                return None
            if function is tree:
                tree = combined
            else:
                function.replace(combined)
        outside = {c.name for c in tree.find_all(exp.Column) if not c.name.startswith("__p")}
        if not outside <= set(group_by):
            return None  # a column outside an aggregate: only the group columns are kept
        finals[name] = tree.sql(dialect="duckdb")
    return PanePlan(partials, merges, finals, arrow if plain else None)


def _combine(function: exp.AggFunc, partial: Callable[[str, exp.Expr | None], exp.Expr]) -> exp.Expr | None:
    argument = function.this
    extra = [k for k, v in function.args.items() if k not in ("this", "big_int") and v not in (None, [])]
    if extra or (argument is not None and not isinstance(argument, exp.Expr)):
        return None  # max(x, 3), count_if(a, b): not the plain aggregate
    if isinstance(function, exp.Count):
        return partial("count", argument)
    if isinstance(function, exp.CountIf) and argument is not None:
        return partial("count_if", argument)
    if isinstance(function, exp.Sum | exp.Min | exp.Max) and argument is not None:
        return partial(type(function).__name__.lower(), argument)
    if isinstance(function, exp.Avg) and argument is not None:
        total = partial("sum", argument).sql(dialect="duckdb")
        count = partial("count", argument).sql(dialect="duckdb")
        return sqlglot.parse_one(f"CAST({total} AS DOUBLE) / NULLIF({count}, 0)", read="duckdb")
    return None


def partial_query(batch: str, plan: PanePlan, group_by: Sequence[str]) -> str:
    """One partial row per (first window, last window, group) of the rows in `batch`."""
    keys = ", ".join(["__first", "__last", *(quote(g) for g in group_by)])
    columns = ", ".join(f"{sql} AS {column}" for column, sql in plan.partials.items())
    return f"SELECT {keys}, {columns} FROM {batch} GROUP BY {keys}"


def arrow_partials(batch: pa.Table, plan: PanePlan, group_by: Sequence[str]) -> pa.Table:
    """`partial_query` by Arrow's group_by, for a plan whose partials are all plain columns."""
    if plan.arrow is None:
        raise ValueError("arrow_partials needs a plan of plain columns")
    keys = ["__first", "__last", *group_by]
    aggregations = [([] if source is None else source, name) for source, name in plan.arrow.values()]
    reduced = batch.group_by(keys, use_threads=False).aggregate(aggregations)
    made = [name if source is None else f"{source}_{name}" for source, name in plan.arrow.values()]
    return pa.table(
        [*(reduced.column(k) for k in keys), *(reduced.column(m) for m in made)], [*keys, *plan.arrow]
    )


def arrow_fits(
    con: duckdb.DuckDBPyConnection, batch: pa.Table, name: str, plan: PanePlan, group_by: Sequence[str]
) -> bool:
    """Whether Arrow's partials of `batch` (registered as `name`) have the types DuckDB's would
    (integer sums widen in DuckDB, not in Arrow: those keep the query)."""
    try:
        fast = arrow_partials(batch, plan, group_by)
    except (pa.ArrowException, ValueError):
        return False
    con.register("_inferline_window_fast", fast)
    try:
        return bool(
            con.sql("SELECT * FROM _inferline_window_fast").types
            == con.sql(partial_query(name, plan, group_by)).types
        )
    except duckdb.Error:
        return False
    finally:
        con.unregister("_inferline_window_fast")


def merge_query(plan: PanePlan, group_by: Sequence[str]) -> str:
    """The pane table with the partial rows of each (first, last, group) combined into one."""
    keys = ", ".join(["__first", "__last", *(quote(g) for g in group_by)])
    columns = ", ".join(f"{sql} AS {column}" for column, sql in plan.merges.items())
    return f"SELECT {keys}, {columns} FROM {PANES} GROUP BY {keys}"


def same_types(
    con: duckdb.DuckDBPyConnection,
    batch: str,
    plan: PanePlan,
    run: Mapping[str, str],
    group_by: Sequence[str],
) -> bool:
    """Whether the panes give the types the rows would (DuckDB binds both over `batch`);
    False when either does not bind: the row path then names the error."""
    groups = ", ".join(["__last", *(quote(g) for g in group_by)])
    rows = f"SELECT {', '.join(run.values())} FROM {batch} GROUP BY {groups}"
    partial = partial_query(batch, plan, group_by)
    panes = f"SELECT {', '.join(plan.finals.values())} FROM ({partial}) GROUP BY {groups}"
    try:
        return bool(con.sql(rows).types == con.sql(panes).types)
    except duckdb.Error:
        return False


def pack_keys(keys: pa.Array) -> bytes:
    """A batch's message keys as one value (Arrow IPC), saved in one row per batch."""
    table = pa.table({"key": keys})
    out = io.BytesIO()
    with ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)
    return out.getvalue()


def unpack_keys(blobs: Sequence[bytes]) -> pa.Array | None:
    arrays = [ipc.open_stream(blob).read_all().column("key") for blob in blobs]
    chunks = [chunk for array in arrays for chunk in array.chunks]
    return pa.chunked_array(chunks, pa.string()).combine_chunks() if chunks else None


@dataclass(frozen=True)
class Saved:
    """What a state file's panes held: the last batch, the watermark, the keys counted."""

    seq: int
    max_seen: int
    closed_until: int
    keys: pa.Array | None


class PaneState:
    """Open windows as partial rows in `window_panes`, and per committed batch one row of
    `window_pane_keys` (its keys and the watermark): two statements per batch.

    Example:
        >>> state = PaneState.choose(con, table, aggregates, group_by=["cls"], origin="s")  # doctest: +SKIP
        >>> state.add(table)  # doctest: +SKIP
        >>> state.save(1, last, max_seen, closed_until, pack_keys(keys))  # doctest: +SKIP
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        plan: PanePlan,
        run: dict[str, str],
        *,
        group_by: Sequence[str],
        origin: str,
        created: bool,
    ) -> None:
        self.con = con
        self.plan = plan
        self.run = run  # the aggregates as run over rows (conditions cast)
        self.group_by = list(group_by)
        self.origin = origin
        self.created = created
        self.arrow: bool | None = None  # partials by Arrow's group_by; None: not known yet
        self._unmerged = 0

    @classmethod
    def choose(
        cls,
        con: duckdb.DuckDBPyConnection,
        table: pa.Table,
        aggregates: Mapping[str, str],
        *,
        group_by: Sequence[str],
        origin: str,
    ) -> PaneState | None:
        """Panes for these aggregates over rows like `table`, or None when they need the rows:
        one is not decomposable, or the partials would not give the type the rows give."""
        run = cast_aggregates(aggregates, {f.name for f in table.schema if pa.types.is_boolean(f.type)})
        plan = pane_plan(run, group_by=group_by)
        if plan is None:
            return None
        con.register(_BATCH, table)
        try:
            if not same_types(con, _BATCH, plan, run, group_by):
                return None
            state = cls(con, plan, run, group_by=group_by, origin=origin, created=False)
            state.arrow = arrow_fits(con, table, _BATCH, plan, group_by)
            return state
        finally:
            con.unregister(_BATCH)

    @classmethod
    def restore(
        cls, con: duckdb.DuckDBPyConnection, *, group_by: Sequence[str], origin: str
    ) -> tuple[PaneState, Saved] | None:
        """The panes a state file holds, or None when it holds none."""
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if PANES not in tables:
            return None
        try:
            ((text,),) = con.execute(f"SELECT aggregates FROM {PLAN}").fetchall()
            rows = con.execute(f"SELECT seq, max_seen, closed_until, keys FROM {KEYS}").fetchall()
        except duckdb.Error as exc:
            raise WindowError(
                f"{origin}: window.state: its panes cannot be read ({_first_line(exc)}); "
                "delete it to start the windows over"
            ) from None
        run = json.loads(text)
        plan = pane_plan(run, group_by=group_by)
        if plan is None:
            raise WindowError(f"{origin}: window.state: its panes cannot be read; delete it to start over")
        # The watermark only grows: the newest batch's is the largest.
        saved = Saved(
            max((int(r[0]) for r in rows), default=0),
            max((int(r[1]) for r in rows), default=-(2**62)),
            max((int(r[2]) for r in rows), default=-(2**62)),
            unpack_keys([bytes(r[3]) for r in rows]),
        )
        return cls(con, plan, run, group_by=group_by, origin=origin, created=True), saved

    def add(self, table: pa.Table) -> None:
        """The partial rows of a batch of placed rows (`__first`, `__last`, groups, columns)."""
        con = self.con
        if self.arrow is None:  # reopened: this batch shows the column types
            con.register(_BATCH, table)
            try:
                self.arrow = arrow_fits(con, table, _BATCH, self.plan, self.group_by)
            finally:
                con.unregister(_BATCH)
        name = _PARTIALS if self.arrow else _BATCH
        con.register(name, arrow_partials(table, self.plan, self.group_by) if self.arrow else table)
        query = (
            f"SELECT * FROM {_PARTIALS}" if self.arrow else partial_query(_BATCH, self.plan, self.group_by)
        )
        try:
            if not self.created:
                con.execute(f"CREATE TABLE {PANES} AS {query}").fetchall()
                con.execute(
                    f"CREATE TABLE {PLAN} AS SELECT ? AS aggregates", [json.dumps(self.run)]
                ).fetchall()
                columns = "seq BIGINT, last BIGINT, max_seen BIGINT, closed_until BIGINT, keys BLOB"
                con.execute(f"CREATE TABLE {KEYS} ({columns})").fetchall()
                self.created = True
            else:
                ((added,),) = con.execute(f"INSERT INTO {PANES} BY NAME {query}").fetchall()
                self._unmerged += int(added)
        except duckdb.Error as exc:
            raise WindowError(
                f"{self.origin}: window: could not keep the partials: {_first_line(exc)}"
            ) from None
        finally:
            with contextlib.suppress(duckdb.Error):  # a failed statement aborted the transaction
                con.unregister(name)
        if self._unmerged > _MERGE_AFTER:
            self.merge()

    def save(self, seq: int, last: int, max_seen: int, closed_until: int, keys: bytes) -> None:
        """One committed batch: its last window start, the watermark after it, its keys."""
        record: list[object] = [seq, last, max_seen, closed_until, keys]
        self.con.execute(f"INSERT INTO {KEYS} VALUES (?, ?, ?, ?, ?)", record).fetchall()

    def drop_closed(self, until: int, size: int) -> None:
        """Forget panes, and batches' keys, whose windows all ended by `until`."""
        self.con.execute(f"DELETE FROM {PANES} WHERE __last + {size} <= {until}").fetchall()
        # The batch being committed writes its row after this: the newest row always stays.
        self.con.execute(f"DELETE FROM {KEYS} WHERE last + {size} <= {until}").fetchall()

    def merge(self) -> None:
        """The partial rows of each (first, last, group) combined into one."""
        con = self.con
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _keep AS {merge_query(self.plan, self.group_by)}"
        ).fetchall()
        con.execute(f"DELETE FROM {PANES}").fetchall()
        con.execute(f"INSERT INTO {PANES} BY NAME SELECT * FROM _keep").fetchall()
        con.execute("DROP TABLE _keep").fetchall()
        self._unmerged = 0


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
