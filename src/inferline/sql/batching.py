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
"""

from __future__ import annotations

import duckdb
from sqlglot import exp

# A table reference with anything more than these (TABLESAMPLE, PIVOT, ...) is left alone.
_PLAIN_ARGS = {"this", "db", "catalog", "alias"}


def object_tables(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """(schema, name), lowercased, of the current database's views over `read_blob` with a `uri`."""
    rows = con.execute(
        "SELECT v.schema_name, v.view_name FROM duckdb_views() AS v "
        "WHERE NOT v.internal AND v.database_name = current_database() "
        "AND v.sql ILIKE '%read_blob(%' AND EXISTS (SELECT 1 FROM duckdb_columns() AS c "
        "WHERE c.database_name = v.database_name AND c.schema_name = v.schema_name "
        "AND c.table_name = v.view_name AND c.column_name = 'uri')"
    ).fetchall()
    return {(str(schema).lower(), str(name).lower()) for schema, name in rows}


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
