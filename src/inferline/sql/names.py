"""BigQuery's names for tables and models -> local DuckDB names, one rule for both.

A BigQuery name is `project.dataset.name`; locally there is one project, so the project is
dropped and the rest kept: `dataset.name` is DuckDB schema `dataset`, table (or catalog model)
`name`. Every spelling the docs use maps the same way:

    bigquery-public-data.ml_datasets.iris      -> ml_datasets.iris
    `myproject.mydataset.mytable`              -> mydataset.mytable
    `myproject`.`mydataset`.`mytable`          -> mydataset.mytable
    myproject:mydataset.mymodel (DROP MODEL)   -> mydataset.mymodel

A three-part name whose first part is a database attached to DuckDB (`memory.main.t`, an
`ATTACH`ed file) is DuckDB's own and stays as written. Statements that use such names but no
BigQuery-ML are translated too (see `uses_bigquery_names`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from inferline.errors import SqlError

# `my-project.dataset.table`: a dashed project, which only BigQuery reads unquoted.
_DASHED = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+\.[A-Za-z_]\w*\.[A-Za-z_]\w*")
_THREE_PARTS = re.compile(r"\w\.\w+\.\w")
# `project:` before a dataset (the bq tool's spelling, which BigQuery takes in DROP MODEL).
_COLON_PROJECT = re.compile(r"(?<=[`\s])[A-Za-z0-9_.-]+:(?=`?[A-Za-z_])")


def table_name(table: Any) -> str:
    """`proj.ds.t`, `proj:ds.t`, `ds.t` or a backquoted `ds.t` -> `ds.t` (the project is dropped)."""
    if not isinstance(table, exp.Table):
        raise SqlError(f"expected a name like dataset.name, got {table.sql('bigquery')}")
    parts = [p.name for p in table.parts]
    dotted = ".".join(parts).split(".")
    dotted[0] = dotted[0].rpartition(":")[2]
    if len(dotted) >= 2:
        dotted[-2] = dotted[-2].rpartition(":")[2]
    return ".".join(dotted[-2:])


def strip_colon_project(text: str) -> str:
    """`DROP MODEL myproject:mydataset.mymodel` -> `DROP MODEL mydataset.mymodel` (sqlglot
    cannot parse the colon; only model DDL, which holds no strings, is given to this)."""
    return _COLON_PROJECT.sub("", text)


def attached_databases(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        str(name).lower()
        for (name,) in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    }


def localize_tables(tree: exp.Expr, attached: set[str]) -> None:
    """Drop the project from every table name in `tree` that is not DuckDB's own (see module doc)."""
    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue  # ML.PREDICT(...) and other table functions
        parts = [p.name for p in table.parts]
        if len(parts) == 3 and parts[0].lower() in attached:
            continue
        if len(parts) <= 2 and all("." not in p and ":" not in p for p in parts):
            continue  # already local
        local = table_name(table).split(".")
        quoted = any(p.args.get("quoted") for p in table.parts)
        table.set("catalog", None)
        table.set("db", exp.to_identifier(local[0], quoted=quoted) if len(local) == 2 else None)
        table.set("this", exp.to_identifier(local[-1], quoted=quoted))


def uses_bigquery_names(text: str, tokens: list[Token], con: duckdb.DuckDBPyConnection | None) -> bool:
    """Whether a statement without BigQuery-ML still needs translating for its names: a
    backquoted identifier, a dashed project, or a three-part table name whose first part is not
    an attached DuckDB database."""
    for token in tokens:
        if token.token_type == TokenType.IDENTIFIER and text[token.start : token.start + 1] == "`":
            return True
    for match in _DASHED.finditer(text):
        if any(t.start == match.start() and t.token_type == TokenType.VAR for t in tokens):
            return True
    if con is None or not _THREE_PARTS.search(text):
        return False
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return False
    attached = attached_databases(con)
    return any(
        len(t.parts) == 3 and t.parts[0].name.lower() not in attached
        for t in tree.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier)
    )


def ml_function(tokens: list[Token], i: int) -> str | None:
    """The upper-cased <function> when `tokens[i:]` start `ML.<function>` (not `x.ML.<name>`, a
    qualified column), else None."""
    if (
        i + 2 < len(tokens)
        and tokens[i].text.upper() == "ML"
        and tokens[i + 1].token_type == TokenType.DOT
        and (i == 0 or tokens[i - 1].token_type != TokenType.DOT)
    ):
        return tokens[i + 2].text.upper()
    return None


def ml_calls(tokens: list[Token], functions: Collection[str]) -> list[tuple[str, int, int, list[int]]]:
    """Each `ML.<function>(...)` call among `tokens`: (function, index of `ML`, index of the
    closing paren, indexes of its top-level commas)."""
    found = []
    for i in range(len(tokens) - 3):
        name = ml_function(tokens, i)
        if name is None or name not in functions or tokens[i + 3].token_type != TokenType.L_PAREN:
            continue
        depth, commas = 0, list[int]()
        for k in range(i + 3, len(tokens)):
            kind = tokens[k].token_type
            if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
                depth += 1
            elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET):
                depth -= 1
                if depth == 0:
                    found.append((name, i, k, commas))
                    break
            elif kind == TokenType.COMMA and depth == 1:
                commas.append(k)
        else:
            raise SqlError(f"ML.{name}: missing closing parenthesis")
    return found
