"""Object tables read in full chunks where ML.PREDICT consumes them.

DuckDB's `read_blob` (what an object table is a view over) emits one file per chunk, and
a UDF runs once per chunk, so `ML.PREDICT(MODEL m, (SELECT ML.DECODE_IMAGE(data) AS image
FROM ds.images))` would decode and predict one image per call. An `ORDER BY` is a pipeline
breaker whose output comes in full chunks (2,048 rows), so each object table read by an
ML.PREDICT input becomes `(SELECT * FROM ds.images ORDER BY uri) AS images`: decoding and
the model then run on 2,048 images per call. DuckDB pushes projections and filters through
the sort (file contents are still read only when `data` is selected; a `WHERE` still
filters in the scan); the sort buffers the selected columns of every file (spilling to
disk beyond memory) before the first model call.

A SELECT with its own LIMIT reads its object table as it is: sorting would read every file
for a few rows.

Views over object tables (with a `uri` column) are read the same way. So are object tables
read by native DuckDB statements that call `predict`, `predict_scores` or `predict_label`
when they run through `SqlConnection.sql/execute/run_script` (so `inferline sql`): there the
statement is only parsed to find the references, and each one is replaced in the original
text, so the rest of the DuckDB SQL runs exactly as written (see `batch_predict_scans`).
"""

from __future__ import annotations

import re

import duckdb
import sqlglot
from sqlglot import exp

# A table reference with anything more than these (TABLESAMPLE, PIVOT, ...) is left alone.
_PLAIN_ARGS = {"this", "db", "catalog", "alias"}


# The SQL functions (sql/functions.py) whose calls make a native statement read object tables sorted.
PREDICT_MACROS = ("predict", "predict_scores", "predict_label")
# Where a parenthesised subquery's rows become the enclosing query's rows.
_ROW_SOURCES = (exp.From, exp.Join, exp.Lateral, exp.SetOperation)
_MAYBE_PREDICT = re.compile(r"\bpredict(_scores|_label)?\s*\(", re.IGNORECASE)


def object_tables(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """(schema, name), lowercased, of the current database's object tables and views over them.

    An object table is a view over `read_blob` with a `uri` column; a view over one (directly or
    through other such views) counts when it has a `uri` column too (it is sorted by it).
    """
    rows = con.execute(
        "SELECT v.schema_name, v.view_name, v.sql ILIKE '%read_blob(%', v.sql FROM duckdb_views() AS v "
        "WHERE NOT v.internal AND v.database_name = current_database() "
        "AND EXISTS (SELECT 1 FROM duckdb_columns() AS c "
        "WHERE c.database_name = v.database_name AND c.schema_name = v.schema_name "
        "AND c.table_name = v.view_name AND c.column_name = 'uri')"
    ).fetchall()
    tables = {(str(schema).lower(), str(name).lower()) for schema, name, blob, _ in rows if blob}
    views = {
        (str(schema).lower(), str(name).lower()): _read_tables(str(sql), str(schema).lower())
        for schema, name, blob, sql in rows
        if not blob
    }
    while True:  # views over object tables, then views over those, ...
        found = {key for key, reads in views.items() if reads & tables}
        if not found:
            return tables
        tables |= found
        views = {key: reads for key, reads in views.items() if key not in found}


def _read_tables(sql: str, schema: str) -> set[tuple[str, str]]:
    """(schema, name) pairs a view's SQL may read; an unqualified name, in its schema or main."""
    tree = _parse(sql)
    if tree is None:
        return set()
    names: set[tuple[str, str]] = set()
    for table in tree.find_all(exp.Table):
        if table.catalog or not isinstance(table.this, exp.Identifier):
            continue
        name = table.name.lower()
        names |= {(table.db.lower(), name)} if table.db else {(schema, name), ("main", name)}
    return names


def cte_names(tree: exp.Expr) -> set[str]:
    """Names the statement's WITH clauses define (they shadow tables of the same name)."""
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def sort_object_scans(node: exp.Expr, tables: set[tuple[str, str]], shadowed: set[str]) -> int:
    """Replace, in place, each object table read in FROM/JOIN under `node` by a sorted subquery.

    Returns how many references were replaced. `node` must not itself be the table.
    """
    replaced = 0
    for table in list(node.find_all(exp.Table)):
        if not _is_object_scan(table, tables, shadowed):
            continue
        select = table.find_ancestor(exp.Select)
        if select is not None and select.args.get("limit") is not None:
            continue
        alias = table.args.get("alias")
        bare = table.copy()
        bare.set("alias", None)
        query = exp.select("*").from_(bare).order_by(exp.column("uri"))
        name = alias.copy() if alias is not None else exp.TableAlias(this=exp.to_identifier(table.name))
        table.replace(exp.Subquery(this=query, alias=name))
        replaced += 1
    return replaced


def _is_object_scan(table: exp.Table, tables: set[tuple[str, str]], shadowed: set[str]) -> bool:
    if not isinstance(table.parent, (exp.From, exp.Join)) or table.catalog:
        return False
    if any(value for key, value in table.args.items() if key not in _PLAIN_ARGS):
        return False
    if not isinstance(table.this, exp.Identifier):
        return False  # a table function such as read_blob(...) itself
    schema = table.db.lower() if table.db else "main"
    if not table.db and table.name.lower() in shadowed:
        return False
    return (schema, table.name.lower()) in tables


def batch_predict_scans(text: str, con: duckdb.DuckDBPyConnection) -> str:
    """A native DuckDB statement that calls a predict function, with its object tables read sorted.

    Each FROM/JOIN reference to an object table (or a view over one) whose rows flow into the
    statement's result (not one in a WHERE/IN/EXISTS or scalar subquery) and has no LIMIT above
    it is replaced, in `text` itself, by `(SELECT * FROM t ORDER BY uri) AS t`. A statement
    that sqlglot cannot parse, or that names a column `schema.table.column`, runs as written.
    """
    if not _MAYBE_PREDICT.search(text):
        return text
    tree = _parse(text) if _mask_predict_calls(text) is not None else None
    if tree is None:
        return text
    try:
        tables = object_tables(con)
    except duckdb.Error:
        return text  # e.g. an aborted transaction: the statement itself reports it
    if not tables:
        return text
    shadowed = cte_names(tree)
    spans: list[tuple[int, int, str]] = []
    for table in tree.find_all(exp.Table):
        if not _is_object_scan(table, tables, shadowed) or not _feeds_result(table):
            continue
        if any(_names_schema(column, table) for column in tree.find_all(exp.Column)):
            continue
        span = _span(text, table)
        if span is None:
            continue
        start, end = span
        name = text[table.this.meta["start"] : end]
        alias = "" if table.args.get("alias") is not None else f" AS {name}"
        spans.append((start, end, f"(SELECT * FROM {text[start:end]} ORDER BY uri){alias}"))
    for start, end, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _parse(sql: str) -> exp.Expr | None:
    """DuckDB SQL -> its syntax tree (predict calls masked), or None when sqlglot cannot read it."""
    try:
        return sqlglot.parse_one(_mask_predict_calls(sql) or sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None


def _mask_predict_calls(text: str) -> str | None:
    """`text` with calls to the predict functions renamed (same length) so sqlglot parses them.

    sqlglot reads `predict(a, b)` as BigQuery's ML.PREDICT, which takes at most three arguments.
    None when no such call is there (outside strings and comments).
    """
    try:
        tokens = sqlglot.tokenize(text, read="duckdb")
    except sqlglot.errors.TokenError:
        return None
    chars = list(text)
    found = False
    for token, after in zip(tokens, tokens[1:], strict=False):
        if token.text.lower() in PREDICT_MACROS and after.token_type == sqlglot.TokenType.L_PAREN:
            chars[token.start : token.end + 1] = "p" + "x" * (token.end - token.start)
            found = True
    return "".join(chars) if found else None


def _feeds_result(table: exp.Table) -> bool:
    """Whether the table's rows flow into the statement's result, with no LIMIT on the way."""
    node: exp.Expr | None = table
    while node is not None:
        if node.args.get("limit") is not None:
            return False
        if isinstance(node, (exp.Where, exp.Having, exp.Qualify, exp.Exists, exp.In)):
            return False
        if isinstance(node, exp.Subquery) and not isinstance(node.parent, _ROW_SOURCES):
            return False  # a scalar subquery
        node = node.parent
    return True


def _names_schema(column: exp.Column, table: exp.Table) -> bool:
    # `ds.images.data`: the sorted subquery is named `images`, so this reference would break.
    return (
        bool(column.db)
        and column.db.lower() == (table.db or "main").lower()
        and (column.table.lower() == table.name.lower())
    )


def _span(text: str, table: exp.Table) -> tuple[int, int] | None:
    """[start, end) of the table's name in `text` (alias excluded), checked by parsing it back."""
    parts = table.parts
    first, last = parts[0].meta.get("start"), parts[-1].meta.get("end")
    if not isinstance(first, int) or not isinstance(last, int):
        return None
    start, end = first, last + 1
    try:
        back = exp.to_table(text[start:end], dialect="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    bare = table.copy()
    bare.set("alias", None)
    return (start, end) if back == bare else None
