"""`inferline report`: an HTML evaluation report of a predictions table."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from inferline.errors import InferlineError


def register(app: typer.Typer) -> None:
    app.command(name="report")(report)


def report(
    table: Annotated[str, typer.Argument(help="Predictions table in --db, or a .parquet/.jsonl/.csv file.")],
    db: Annotated[str | None, typer.Option(help="DuckDB file holding TABLE (the sink's path:).")] = None,
    label: Annotated[str | None, typer.Option(help="Column with the true class: adds accuracy etc.")] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Another prediction to compare with: a column of TABLE, a table in --db "
            "(joined on key), or TABLE.COLUMN."
        ),
    ] = None,
    prediction: Annotated[str, typer.Option(help="Column holding the predicted class.")] = "prediction",
    runs: Annotated[int, typer.Option(help="How many recent runs to chart.")] = 20,
    output: Annotated[str, typer.Option("--output", "-o", help="HTML file to write.")] = "report.html",
) -> None:
    """Write a self-contained HTML report: classes, accuracy, confusion matrix, run history."""
    from rich.console import Console

    from inferline.io.targets import check_output
    from inferline.report.data import load_report
    from inferline.report.html import render_report

    check_output(output, "html", setting="-o {}")
    data = load_report(table, db=db, label=label, compare=compare, prediction=prediction, runs=runs)
    page = render_report(data)
    parent = os.path.dirname(output)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(page)
    except OSError as exc:
        raise InferlineError(
            f"report: cannot write {output} ({exc.strerror}); choose another -o path"
        ) from None
    summary = f"{data.rows:,} rows, {len(data.class_counts)} classes"
    if data.windows is not None:
        charted = ", ".join(data.windows.aggregates) or "nothing numeric"
        summary = f"{data.rows:,} windowed rows, charted over time: {charted}"
    if data.evaluation is not None:
        summary += f", accuracy {data.evaluation.accuracy * 100:.1f}%"
    if data.comparison is not None:
        summary += f", agreement with {data.comparison.name} {data.comparison.confusion.accuracy * 100:.1f}%"
    Console(highlight=False, soft_wrap=True).print(f"wrote {output}: {summary}", markup=False)
