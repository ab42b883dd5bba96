"""`CREATE MODEL m TRANSFORM(ML.STANDARD_SCALER(x) OVER () AS x, c, * EXCEPT (y)) ...`:
BigQuery ML's preprocessing that is saved with the model.

At CREATE MODEL each ML.* analytic function of the TRANSFORM list is fitted once on the training
query's rows (sql/preprocessing.py's recipes: its statistics become SQL literals), so every
output is a plain DuckDB expression over the query's columns. The outputs are the model's
features (and label); the fitted list is kept in the catalog, and ML.PREDICT/ML.EVALUATE apply
it again to their input (`apply_sql`): the outputs, then the input's other columns.

Example:
    >>> columns_sql([("x", "(x - 3.0) / 1.5")])
    '(x - 3.0) / 1.5 AS "x"'
"""

from __future__ import annotations

import re
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from inferline.errors import SqlError
from inferline.sql import dialect, preprocessing
from inferline.sql.training.data import ROW

RAW = "__inferline_raw"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def columns_sql(outputs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{sql} AS {_quote(name)}" for name, sql in outputs)


def fit(
    con: duckdb.DuckDBPyConnection, expressions: list[exp.Expr], columns: list[str], source: str, where: str
) -> list[tuple[str, str]]:
    """Each TRANSFORM output as (name, DuckDB SQL with fitted statistics), fitted on `source`
    (a table or view name holding the query's rows, whose columns are `columns`)."""
    outputs: list[tuple[str, str]] = []
    for node in expressions:
        if isinstance(node, exp.Star):
            left_out = {c.name for c in node.args.get("except_") or node.args.get("except") or []}
            unknown = sorted(left_out - set(columns))
            if unknown:
                raise SqlError(f"{where}: TRANSFORM's * EXCEPT names no column {', '.join(unknown)}")
            outputs.extend((c, _quote(c)) for c in columns if c not in left_out)
            continue
        name = (
            node.alias if isinstance(node, exp.Alias) else node.name if isinstance(node, exp.Column) else ""
        )
        if not name:
            raise SqlError(f"{where}: TRANSFORM output {node.sql('bigquery')} needs a name: ... AS column")
        body = node.this if isinstance(node, exp.Alias) else node
        outputs.append((name, _fitted(con, body.copy(), source, where)))
    names = [n for n, _ in outputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SqlError(f"{where}: TRANSFORM gives column(s) {', '.join(twice)} more than once")
    return outputs


def _fitted(con: duckdb.DuckDBPyConnection, tree: exp.Expr, source: str, where: str) -> str:
    wrapper = exp.Paren(this=tree)  # so the top node can be replaced too
    calls = [
        dot
        for dot in wrapper.find_all(exp.Dot)
        if isinstance(dot.this, exp.Identifier)
        and dot.this.name.upper() == "ML"
        and isinstance(dot.expression, exp.Anonymous)
    ]
    for dot in reversed(calls):
        call = dot.expression
        name = call.name.upper()
        if name not in preprocessing.FUNCTIONS:
            raise SqlError(f"{where}: ML.{name} is not a preprocessing function TRANSFORM can use")
        nodes = list(call.expressions)
        args = [a.sql("duckdb") for a in nodes]
        window = dot.parent if isinstance(dot.parent, exp.Window) and dot.parent.this is dot else None
        if name in preprocessing.ANALYTIC:
            if window is not None and (window.args.get("partition_by") or window.args.get("order")):
                raise SqlError(f"{where}: in TRANSFORM, ML.{name} takes OVER () (the training rows)")
            recipe = preprocessing.recipe_for(name, args)
            fitted: dict[str, str] = {}
            for stat, sql in recipe.stats.items():
                query = preprocessing.Recipe({stat: sql}, "").fit_sql(fitted)
                try:
                    rows = con.execute(f"SELECT {query} FROM {source} LIMIT 1").fetchall()
                except duckdb.Error as exc:
                    raise SqlError(
                        f"{where}: TRANSFORM's ML.{name} cannot be fitted: {str(exc).splitlines()[0]}"
                    ) from None
                fitted[stat] = preprocessing.literal(rows[0][0] if rows else None)
            sql = recipe.apply_sql(fitted)
        elif window is not None:
            raise SqlError(f"{where}: ML.{name} is not an analytic function; call it without OVER (...)")
        else:
            sql = preprocessing.scalar_sql(name, args, nodes)
        (window or dot).replace(exp.Paren(this=exp.Var(this=sql)))
    return str(wrapper.this.sql("duckdb"))


def apply(
    con: duckdb.DuckDBPyConnection, table: pa.Table, expressions: list[exp.Expr], keep: list[str], where: str
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Fit the TRANSFORM on the query's rows and apply it: the transformed rows (with ROW, each
    row's number in `table`, and the `keep` columns the transform does not give) and the fitted
    outputs."""
    raw = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    con.register(RAW, raw)
    try:
        outputs = fit(con, expressions, table.column_names, RAW, where)
        given = {n for n, _ in outputs}
        extra = [_quote(c) for c in [*keep, ROW] if c not in given]
        try:
            result = con.sql(
                f"SELECT {columns_sql(outputs)}, {', '.join(extra)} FROM {RAW} ORDER BY {ROW}"
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise SqlError(f"{where}: TRANSFORM fails: {str(exc).splitlines()[0]}") from None
    finally:
        con.unregister(RAW)
    return result, outputs


def original_rows(table: pa.Table, transformed: pa.Table) -> pa.Table:
    """The query's rows that `transformed` (rows with ROW) came from."""
    return table.take(transformed.column(ROW))


def apply_sql(outputs: list[tuple[str, str]], inner_sql: str, columns: list[str]) -> str:
    """ML.PREDICT's input with the saved TRANSFORM applied: its outputs, then the input's other
    columns (a column the TRANSFORM gives under its own name shows the transformed value)."""
    given = {n for n, _ in outputs}
    kept = [_quote(c) for c in columns if c not in given]
    return f"SELECT {', '.join([columns_sql(outputs), *kept])} FROM ({inner_sql}) AS {RAW}"


def portable(outputs: list[tuple[str, str]], types: dict[str, str], skip: list[str]) -> dict[str, Any]:
    """The fitted TRANSFORM as the store metadata keeps it for use outside SQL
    (models/transformed.py): the query's columns it reads with their DuckDB types (`types`,
    less `skip`: the label and data_split_col), its outputs, and the macros they call."""
    read = _columns_read(outputs)
    inputs = [[c, t] for c, t in types.items() if c not in skip and (read is None or c in read)]
    return {"inputs": inputs, "outputs": [[n, sql] for n, sql in outputs], "macros": _macros(outputs)}


def _columns_read(outputs: list[tuple[str, str]]) -> set[str] | None:
    """The column names the outputs read (None when the SQL does not parse: keep them all)."""
    try:
        tree = sqlglot.parse_one(f"SELECT {columns_sql(outputs)}", read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    return {c.name for c in tree.find_all(exp.Column)}


def _macros(outputs: list[tuple[str, str]]) -> list[str]:
    """The CREATE MACRO statements (preprocessing's and the dialect's) the outputs call, with
    the ones those call, in definition order."""
    statements = [s.strip() for s in f"{preprocessing.MACROS}\n{dialect.MACROS}".split(";") if s.strip()]
    named = {_macro_name(s): " ".join(s.split()) for s in statements}
    text = " ".join(sql for _, sql in outputs)
    needed: set[str] = set()
    while True:
        found = {name for name in named if name not in needed and re.search(rf"\b{name}\(", text)}
        if not found:
            break
        needed |= found
        text = " ".join(named[name] for name in found)
    return [body for name, body in named.items() if name in needed]


def _macro_name(statement: str) -> str:
    match = re.search(r"MACRO\s+(\w+)\s*\(", statement)
    return match.group(1) if match else ""
