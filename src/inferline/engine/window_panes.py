"""Partial aggregates for `window:`: open windows kept as panes, not as rows.

A 60 s window sliding every 10 s counts each row in 6 windows. When every aggregate is
decomposable — `count`, `count_if`, `sum`, `min`, `max`, and `avg` as a sum over a count,
inside any scalar expression — a batch of rows is reduced (by Arrow's group_by for plain
columns, else one GROUP BY) to a few partial rows, one per (first window, last window,
group): the rows of a pane (an aligned stretch of `gcd(size, every)`) count in the same
windows, and so do a late row's, whose first window is later. A closing window combines
the partials that count in it. The open state is then panes x groups rows, whatever the
rate (held by `window_pane_state.py`, closed by `window_pane_close.py`). Anything else
(`list`, `quantile`, `count(DISTINCT ...)`, FILTER, an unknown function that may be an
aggregate) keeps the rows (`engine/windows.py`).

Example:
    >>> plan = pane_plan({"n": "count(*)", "mean": "avg(score)"}, group_by=["cls"])
    >>> plan.partials
    {'__p0': 'COUNT(*)', '__p1': 'SUM(score)', '__p2': 'COUNT(score)'}
    >>> plan.finals["mean"]
    'CAST(SUM(__p1) AS DOUBLE) / NULLIF(CAST(SUM(__p2) AS BIGINT), 0)'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from inferline.engine.window_sql import simple_call
from inferline.io.duckdb import quote

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
    group_by reduces a batch without a query); `outputs`: aggregate -> ("value", column) or
    ("ratio", sum column, count column) when every aggregate is a plain call, so a close can
    combine the partials with Arrow instead of a query (`engine/window_pane_close.py`)."""

    partials: dict[str, str]
    merges: dict[str, str]
    finals: dict[str, str]
    arrow: dict[str, tuple[str | None, str]] | None
    outputs: dict[str, tuple[str, ...]] | None = None


def pane_plan(aggregates: Mapping[str, str], *, group_by: Sequence[str]) -> PanePlan | None:
    """The partial aggregates of `aggregates`, or None when one of them needs the rows."""
    partials: dict[str, str] = {}
    merges: dict[str, str] = {}
    finals: dict[str, str] = {}
    arrow: dict[str, tuple[str | None, str]] = {}
    outputs: dict[str, tuple[str, ...]] | None = {}
    plain = True

    def column_of(kind: str, inner: str, source: str | None) -> str:
        """The partial column of `kind(inner)` (`source`: the plain column it reads, if one)."""
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
        return column

    def partial(kind: str, inner: str, source: str | None) -> str:
        """The combined partial `kind(inner)`, as SQL over the partial rows."""
        return _COMBINE[kind].format(column_of(kind, inner, source))

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
                total, count = column_of("sum", argument, source), column_of("count", argument, source)
                ratio = (_COMBINE["sum"].format(total), _COMBINE["count"].format(count))
                finals[name] = "CAST({} AS DOUBLE) / NULLIF({}, 0)".format(*ratio)
                if outputs is not None:
                    outputs[name] = ("ratio", total, count)
                continue
            if argument != "*" or kind == "count":
                column = column_of(kind, argument, source)
                finals[name] = _COMBINE[kind].format(column)
                if outputs is not None:
                    outputs[name] = ("value", column)
                continue
        outputs = None  # an expression: its outputs come from a query
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
    return PanePlan(partials, merges, finals, arrow if plain else None, outputs if plain else None)


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


def merge_query(panes: str, plan: PanePlan, group_by: Sequence[str]) -> str:
    """The partial rows of `panes` with those of each (first, last, group) combined into one."""
    keys = ", ".join(["__first", "__last", *(quote(g) for g in group_by)])
    columns = ", ".join(f"{sql} AS {column}" for column, sql in plan.merges.items())
    return f"SELECT {keys}, {columns} FROM {panes} GROUP BY {keys}"


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
