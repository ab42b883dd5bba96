"""What a report shows, read from a predictions table with a few GROUP BY queries.

The table is a DuckDB table (`--db FILE`) or a Parquet/JSONL/CSV file written by a file
sink. `--compare NAME` is resolved in this order: a column of the table; a table in the
same database (its prediction column, joined on `key`); `TABLE.COLUMN` of another table
(joined on `key`).

Example:
    >>> data = load_report("predictions", db="warehouse.duckdb", label="target")  # doctest: +SKIP
    >>> data.evaluation.accuracy  # doctest: +SKIP
    0.9733
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any

import duckdb

from inferline.errors import InputError
from inferline.io import warehouse
from inferline.io.duckdb import quote
from inferline.io.filesinks import output_files
from inferline.io.parts import part_files
from inferline.io.windowed import WindowedTable, is_windowed, read_windowed
from inferline.report.metrics import Confusion, merge_counts
from inferline.report.runs import RUNS_FILE, read_runs

FILE_READERS = {".parquet": "read_parquet", ".jsonl": "read_json_auto", ".csv": "read_csv_auto"}


@dataclass
class Comparison:
    """Two predictions of the same rows: agreement and their confusion (ours as rows)."""

    name: str
    how: str
    confusion: Confusion
    accuracy: float | None = None


@dataclass
class ReportData:
    """Numbers for one report; `html.render_report` lays them out."""

    table: str
    where: str
    prediction: str
    rows: int
    class_counts: dict[str, int]
    model_versions: list[tuple[str, int]] = field(default_factory=list)
    dead_letters: int | None = None
    label: str | None = None
    evaluation: Confusion | None = None
    unlabelled: int = 0
    comparison: Comparison | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    windows: WindowedTable | None = None  # a `window:` sink's table: charted over time instead
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


def ident(name: str) -> str:
    """A column name, quoted for DuckDB (dots stay part of the name)."""
    return '"' + name.replace('"', '""') + '"'


def load_report(
    table: str,
    *,
    db: str | None = None,
    label: str | None = None,
    compare: str | None = None,
    prediction: str = "prediction",
    runs: int = 20,
) -> ReportData:
    """Read counts, metrics and recent runs for `table` (see the module docstring)."""
    if db is not None and not os.path.exists(db):
        raise InputError(f"report: {db}: DuckDB database not found; give the sink's path: as --db")
    if db is None:
        return _load_file(table, label=label, compare=compare, prediction=prediction, runs=runs)
    with warehouse.connect(db) as con:  # a turn: a stream writing `db` waits for it
        tables = _tables(con)
        if table not in tables:
            listing = ", ".join(sorted(tables)) or "none"
            raise InputError(f"report: {db}: no table {table!r} (tables: {listing})")
        data = _load(con, quote(table), table, db, label, compare, prediction, tables)
        errors = f"{table}_errors"
        if errors in tables:
            data.dead_letters = _scalar(con, f"SELECT count(*) FROM {quote(errors)}")
    data.runs = read_runs(db, table=table, limit=runs)
    return data


def _load_file(
    table: str, *, label: str | None, compare: str | None, prediction: str, runs: int
) -> ReportData:
    table = table.rstrip("/") or table
    reader = FILE_READERS.get(os.path.splitext(table)[1].lower())
    if reader is None:
        raise InputError(
            f"report: {table!r} is not a .parquet/.jsonl/.csv file; for a DuckDB table give --db FILE"
        )
    if not os.path.exists(table):
        raise InputError(f"report: {table}: file not found")
    if os.path.isdir(table):  # a stream's file sink: its committed part files
        files = part_files(table)
        if not files:
            raise InputError(f"report: {table}: no part files committed yet (a stream adds them as it goes)")
    else:
        files = output_files(table) if reader != "read_json_auto" else [table]
    with duckdb.connect() as con:
        # A Parquet/CSV sink starts a new file when a new model writes new columns: all of them.
        listing = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
        relation = f"{reader}([{listing}]{', union_by_name = true' if len(files) > 1 else ''})"
        data = _load(con, relation, table, table, label, compare, prediction, set())
    runs_path = os.path.join(os.path.dirname(table), RUNS_FILE)
    target = os.path.normpath(table)
    history = read_runs(runs_path, limit=10_000)
    data.runs = [r for r in history if os.path.normpath(str(r.get("output"))) == target][-runs:]
    return data


def _load(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    name: str,
    where: str,
    label: str | None,
    compare: str | None,
    prediction: str,
    tables: set[str],
) -> ReportData:
    columns = _columns(con, relation)
    place = f"report: {where} table {name}" if where != name else f"report: {name}"
    if is_windowed(columns):
        return _load_windowed(con, relation, name, where, place, label, compare)
    for option, column in (("--prediction", prediction), ("--label", label)):
        if column is not None and column not in columns:
            raise InputError(f"{place}: no column {column!r} for {option} (columns: {', '.join(columns)})")
    pred = ident(prediction)
    counts = con.execute(f"SELECT {pred}, count(*) FROM {relation} GROUP BY 1").fetchall()
    data = ReportData(
        table=name,
        where=where,
        prediction=prediction,
        rows=_scalar(con, f"SELECT count(*) FROM {relation}"),
        class_counts=merge_counts(counts),
        label=label,
    )
    if "model_id" in columns:
        data.model_versions = _versions(con, relation)
    if label is not None:
        pairs = con.execute(
            f"SELECT {ident(label)}, {pred}, count(*) FROM {relation} "
            f"WHERE {ident(label)} IS NOT NULL GROUP BY 1, 2"
        ).fetchall()
        data.evaluation = Confusion.from_pairs({(t, p): c for t, p, c in pairs})
        data.unlabelled = _scalar(con, f"SELECT count(*) FROM {relation} WHERE {ident(label)} IS NULL")
    if compare is not None:
        data.comparison = _compare(con, relation, name, columns, compare, prediction, label, tables, place)
    return data


def _load_windowed(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    name: str,
    where: str,
    place: str,
    label: str | None,
    compare: str | None,
) -> ReportData:
    for option, value in (("--label", label), ("--compare", compare)):
        if value is not None:
            raise InputError(
                f"{place}: is a windowed table (window_start, window_end), charted over time; "
                f"{option} is for a predictions table (the pipeline's sink:)"
            )
    windows = read_windowed(con, relation, name)
    if windows is None:  # is_windowed said it is
        raise InputError(f"{place}: cannot read its windows")
    return ReportData(
        table=name, where=where, prediction="", rows=windows.windows, class_counts={}, windows=windows
    )


def _compare(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    name: str,
    columns: list[str],
    compare: str,
    prediction: str,
    label: str | None,
    tables: set[str],
    place: str,
) -> Comparison:
    pred = ident(prediction)
    if compare in columns:
        other, how = ident(compare), f"column {compare} of {name}"
        query = f"SELECT {pred}, {other}, count(*) FROM {relation} GROUP BY 1, 2"
        truth = (
            f"SELECT {ident(label)}, {other}, count(*) FROM {relation} "
            f"WHERE {ident(label)} IS NOT NULL GROUP BY 1, 2"
            if label
            else None
        )
    else:
        other_table, other_column = _other_table(compare, prediction, tables)
        if other_table is None:
            raise InputError(
                f"{place}: --compare {compare!r} is neither a column of {name} nor a table in the "
                f"database (columns: {', '.join(columns)}; tables: {', '.join(sorted(tables)) or 'none'}); "
                "give a column, a table, or TABLE.COLUMN"
            )
        other_columns = _columns(con, quote(other_table))
        for where_, cols in ((name, columns), (other_table, other_columns)):
            if "key" not in cols:
                raise InputError(f"{place}: --compare needs a 'key' column in {where_} to join rows on")
        if other_column not in other_columns:
            raise InputError(
                f"{place}: --compare table {other_table} has no column {other_column!r} "
                f"(columns: {', '.join(other_columns)}); use --compare {other_table}.COLUMN"
            )
        source = f"{relation} AS a JOIN {quote(other_table)} AS b USING (key)"
        other, how = f"b.{ident(other_column)}", f"table {other_table} column {other_column}, joined on key"
        query = f"SELECT a.{pred}, {other}, count(*) FROM {source} GROUP BY 1, 2"
        truth = (
            f"SELECT a.{ident(label)}, {other}, count(*) FROM {source} "
            f"WHERE a.{ident(label)} IS NOT NULL GROUP BY 1, 2"
            if label
            else None
        )
    confusion = Confusion.from_pairs({(a, b): c for a, b, c in con.execute(query).fetchall()})
    comparison = Comparison(compare, how, confusion)
    if truth is not None:
        comparison.accuracy = Confusion.from_pairs(
            {(t, p): c for t, p, c in con.execute(truth).fetchall()}
        ).accuracy
    return comparison


def _other_table(compare: str, prediction: str, tables: set[str]) -> tuple[str | None, str]:
    if compare in tables:
        return compare, prediction
    table, _, column = compare.rpartition(".")
    if table in tables and column:
        return table, column
    return None, prediction


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database()"
    ).fetchall()
    names = set()
    for schema, table in rows:
        names.add(table if schema == "main" else f"{schema}.{table}")
    return names


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


def _versions(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, int]]:
    rows = con.execute(f"SELECT model_id, count(*) FROM {relation} GROUP BY 1 ORDER BY 1").fetchall()
    return [(str(m) if m is not None else "(none)", int(c)) for m, c in rows]


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    ((value,),) = con.execute(query).fetchall()
    return int(value)
