"""The SQL of `window:` aggregates, shared by the local engine and the Beam translation.

`aggregate_query` is the one GROUP BY that turns a window's rows into its output rows
(`key`, `window_start`, `window_end`, the group columns, the aggregates), so both runners
compute the same values with the same DuckDB expressions. `numeric_conditions` lets a
numeric aggregate take a condition, as the issue's `avg(prediction = 1)` does: DuckDB has
no `avg(BOOLEAN)`, so a condition (or a BOOLEAN column) given to `avg`, `sum`, `stddev`, ...
is cast to INTEGER (true = 1): `avg` of it is the rate, `sum` the count.

Example:
    >>> numeric_conditions("avg(prediction = 1)")
    'AVG(CAST(prediction = 1 AS INT))'
    >>> numeric_conditions("count_if(prediction = 1) / count(*)")
    'count_if(prediction = 1) / count(*)'
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

import duckdb
import sqlglot
from sqlglot import exp

from inferline.io.duckdb import quote

# Aggregates over numbers whose first argument may be a condition (DuckDB's names, lower case).
NUMERIC_AGGREGATES = frozenset(
    {
        "avg", "mean", "favg", "sum", "fsum", "sumkahan", "kahan_sum", "sum_no_overflow",
        "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
        "median", "mad", "quantile", "quantile_cont", "quantile_disc", "percentile_cont",
        "percentile_disc", "approx_quantile", "kurtosis", "kurtosis_pop", "skewness", "product",
    }
)  # fmt: skip
_CONDITIONS = (exp.Predicate, exp.Connector, exp.Not, exp.Boolean)
_SIMPLE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\s*(\*|[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*")


def numeric_conditions(expression: str, *, boolean_columns: Collection[str] = ()) -> str:
    """`expression` with each condition given to a numeric aggregate cast to INTEGER.

    An expression with nothing to cast (or one sqlglot cannot read) is returned as written,
    so DuckDB reads exactly what the user wrote and names its own errors.
    """
    simple = simple_call(expression)
    if simple is not None and simple[1] not in boolean_columns:
        return expression  # `avg(score)`: nothing to cast, and no parse (the first costs ~0.1 s)
    try:
        tree = sqlglot.parse_one(expression, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return expression
    changed = False
    for function in list(tree.find_all(exp.Func)):
        if _name(function) not in NUMERIC_AGGREGATES:
            continue
        argument = _first_argument(function)
        if argument is not None and _is_boolean(argument, boolean_columns):
            argument.replace(exp.Cast(this=argument.copy(), to=exp.DataType.build("INT")))
            changed = True
    return tree.sql(dialect="duckdb") if changed else expression


def simple_call(expression: str) -> tuple[str, str] | None:
    """`name(column)` or `name(*)` as (lower-case name, argument); None for anything else.

    Example:
        >>> simple_call("AVG( score )")
        ('avg', 'score')
    """
    found = _SIMPLE.fullmatch(expression)
    if found is None or found.group(2).lower() in ("true", "false", "null"):
        return None
    return found.group(1).lower(), found.group(2)


def _name(function: exp.Func) -> str:
    if isinstance(function, exp.Anonymous):
        return str(function.name).lower()
    return str(function.sql_name()).lower()


def _first_argument(function: exp.Func) -> exp.Expression | None:
    if isinstance(function, exp.Anonymous):
        return function.expressions[0] if function.expressions else None
    argument = function.this
    return argument if isinstance(argument, exp.Expression) else None


def _is_boolean(argument: exp.Expression, boolean_columns: Collection[str]) -> bool:
    inner = argument.unnest()
    if isinstance(inner, _CONDITIONS):
        return True
    return isinstance(inner, exp.Column) and not inner.table and inner.name in boolean_columns


def aggregate_query(
    rows: str,
    *,
    where: str,
    start: str,
    end: str,
    group_by: Sequence[str],
    aggregates: Mapping[str, str],
) -> str:
    """One output row per (window, group) of `rows`; `start`/`end` are µs since the epoch.

    The row's `key` is `<start µs>|<end µs>|<group values>`, so a window's early, final
    and replayed rows upsert one another.
    """
    groups = [quote(g) for g in group_by]
    label = " || '|' || ".join(
        [
            f"CAST({start} AS VARCHAR)",
            f"CAST({end} AS VARCHAR)",
            *[f"coalesce(CAST({g} AS VARCHAR), '')" for g in groups],
        ]
    )
    select = ", ".join(
        [
            f"{label} AS key",
            f"make_timestamp({start}) AS window_start",
            f"make_timestamp({end}) AS window_end",
            *groups,
            *[f"{expr} AS {quote(name)}" for name, expr in aggregates.items()],
        ]
    )
    keys = ", ".join([start, end, *groups])
    return f"SELECT {select} FROM {rows} WHERE {where} GROUP BY {keys} ORDER BY {keys}"


def cast_aggregates(aggregates: Mapping[str, str], boolean_columns: Collection[str]) -> dict[str, str]:
    """Every aggregate of a `window:` through `numeric_conditions`."""
    return {
        name: numeric_conditions(expr, boolean_columns=boolean_columns) for name, expr in aggregates.items()
    }


def failing_aggregate(
    con: duckdb.DuckDBPyConnection,
    table: str,
    written: Mapping[str, str],
    run: Mapping[str, str],
    origin: str,
    error: duckdb.Error,
) -> str:
    """The one-line error of a failed window query: the first aggregate that fails alone."""
    for name, expr in run.items():
        try:
            con.sql(f"SELECT {expr} FROM {table} LIMIT 0").fetchall()
        except duckdb.Error as one:
            return f"{origin}: window.aggregates.{name}: {written[name]!r}: {_first_line(one)}"
    return f"{origin}: window: {_first_line(error)}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
