"""`inferline sql`: run DuckDB SQL with predict()/decode_image() and BigQuery-ML statements."""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import json
import os
import sys
from typing import Annotated, Any

import pyarrow as pa
import typer

from inferline.errors import InferlineError

FORMATS = ("table", "csv", "json")


def register(app: typer.Typer) -> None:
    app.command(name="sql")(sql)


def sql(
    query: Annotated[
        str | None, typer.Argument(help="SQL to run (several statements: separate with ;).")
    ] = None,
    file: Annotated[
        str | None, typer.Option("-f", "--file", help="Read the SQL from this file.", metavar="FILE.sql")
    ] = None,
    db: Annotated[
        str, typer.Option(help="DuckDB database file (default: in memory).", metavar="FILE")
    ] = ":memory:",
    store: Annotated[
        str | None,
        typer.Option(
            help="Model store for predict('name', ...) (default: $INFERLINE_STORE or ./model_store)."
        ),
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="Output: table | csv | json (JSON lines).", metavar="FORMAT")
    ] = "table",
    max_rows: Annotated[int, typer.Option(help="Rows shown by --format table.")] = 40,
) -> None:
    """Run SQL on DuckDB, with models as functions and BigQuery-ML statements; prints the last
    statement's result.

    Functions: predict('model', col, ...), predict_label(...), predict_scores(...) and
    decode_image(blob[, height, width]).

    BigQuery-ML statements: CREATE [OR REPLACE] EXTERNAL TABLE (object tables, CSV, Parquet or
    JSON files); CREATE [OR REPLACE] MODEL ... OPTIONS(model_type=..., model_path=...); CREATE
    MODEL ... REMOTE WITH CONNECTION ... OPTIONS(endpoint=...); DROP MODEL [IF EXISTS].

    Training: CREATE [OR REPLACE] MODEL ... [TRANSFORM(...)] OPTIONS(model_type='linear_reg' |
    'logistic_reg' | 'boosted_tree_classifier' | 'boosted_tree_regressor' |
    'random_forest_classifier' | 'random_forest_regressor' | 'dnn_classifier' | 'dnn_regressor' |
    'kmeans' | 'pca' | 'matrix_factorization', ...) AS SELECT ...; then ML.TRAINING_INFO,
    ML.FEATURE_INFO, ML.WEIGHTS, ML.CENTROIDS, ML.EXPLAIN_PREDICT, ML.GLOBAL_EXPLAIN,
    ML.DETECT_ANOMALIES, ML.RECOMMEND.

    BigQuery-ML functions: ML.PREDICT, ML.EVALUATE, ML.CONFUSION_MATRIX, ML.ROC_CURVE and
    EXTERNAL_OBJECT_TRANSFORM(TABLE t, ['SIGNED_URL']); images: ML.DECODE_IMAGE, ML.RESIZE_IMAGE,
    ML.CONVERT_COLOR_SPACE, ML.CONVERT_IMAGE_TYPE.

    Preprocessing: ML.STANDARD_SCALER, ML.MIN_MAX_SCALER, ML.MAX_ABS_SCALER, ML.ROBUST_SCALER,
    ML.IMPUTER, ML.QUANTILE_BUCKETIZE, ML.LABEL_ENCODER, ML.ONE_HOT_ENCODER, ML.MULTI_HOT_ENCODER,
    ML.BAG_OF_WORDS, ML.TF_IDF (over the whole input), ML.NORMALIZER, ML.LP_NORM, ML.DISTANCE,
    ML.BUCKETIZE, ML.NGRAMS, ML.POLYNOMIAL_EXPAND, ML.FEATURE_CROSS, ML.HASH_BUCKETIZE. Every
    other statement runs as DuckDB SQL.
    """
    import inferline.sql
    from inferline.logs import log_to_stderr
    from inferline.sql.connect import reads_only

    log_to_stderr()  # training's progress and summary (CREATE MODEL ... AS SELECT)

    if format_ not in FORMATS:
        raise InferlineError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}")
    if (query is None) == (file is None):
        raise InferlineError("inferline sql: give a QUERY or -f FILE.sql (one of them)")
    if file is not None:
        try:
            with open(file, encoding="utf-8") as handle:
                script = handle.read()
        except OSError as exc:
            raise InferlineError(f"{file}: cannot read SQL file ({exc.strerror})") from None
    else:
        script = query or ""
    if store is None:
        from inferline.models.store import STORE_ENV, default_store

        fallback = default_store()
        store = fallback if os.environ.get(STORE_ENV) or os.path.isdir(fallback) else None
    # A script that only reads opens the file read-only: it reads alongside other readers,
    # and a stream writing the warehouse waits only for this query.
    read_only = db != ":memory:" and os.path.exists(db) and reads_only(script)
    with inferline.sql.connect(db, store=store, read_only=read_only) as con:
        result = con.run_script(script)
        table = con.fetch(result)
        if table is None:
            return
        if format_ == "table":
            _print_table(table, max_rows)
        elif format_ == "csv":
            _print_csv(table)
        else:
            _print_json(table)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def _rows(table: pa.Table) -> Any:
    for batch in table.to_batches():
        yield from batch.to_pylist()


def _print_json(table: pa.Table) -> None:
    for row in _rows(table):
        sys.stdout.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")


def _print_csv(table: pa.Table) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in _rows(table):
        cells = []
        for value in row.values():
            value = _plain(value)
            cells.append(json.dumps(value) if isinstance(value, list | dict) else value)
        writer.writerow(cells)


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def _cell(value: Any, width: int = 60) -> str:
    value = _short(_plain(value))
    text = "NULL" if value is None else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_table(table: pa.Table, max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = table.slice(0, max_rows)
    view = Table(show_header=True, header_style="bold", show_lines=False)
    for name, field in zip(table.column_names, table.schema, strict=True):
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        view.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for row in _rows(shown):
        view.add_row(*(_cell(v) for v in row.values()))
    # Piped output is not cut to 80 columns: a cell holds at most 60 characters.
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=100_000)
    console.print(view, crop=False)
    more = table.num_rows - shown.num_rows
    rows = f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}"
    console.print(rows + (f" ({more} not shown)" if more else ""))
