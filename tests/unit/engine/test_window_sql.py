"""numeric_conditions: conditions given to numeric aggregates become INTEGER; the rest is left as written."""

from __future__ import annotations

import duckdb
import pytest

from inferline.engine.window_sql import numeric_conditions


@pytest.mark.parametrize(
    ("written", "run"),
    [
        ("avg(prediction = 1)", "AVG(CAST(prediction = 1 AS INT))"),
        (
            "100 * avg(prediction = 1 AND score > 0.5)",
            "100 * AVG(CAST(prediction = 1 AND score > 0.5 AS INT))",
        ),
        ("sum(NOT (score < 0.5))", "SUM(CAST(NOT (score < 0.5) AS INT))"),
        ("mean(prediction IN (1, 2))", "MEAN(CAST(prediction IN (1, 2) AS INT))"),
        ("stddev_pop(score > 0.5)", "STDDEV_POP(CAST(score > 0.5 AS INT))"),
        ("sum(flag)", "SUM(CAST(flag AS INT))"),  # flag is a BOOLEAN column
        # Nothing to cast: kept exactly as written.
        ("count_if(prediction = 1) / count(*)", "count_if(prediction = 1) / count(*)"),
        ("avg(score)", "avg(score)"),
        ("quantile(score, 0.95)", "quantile(score, 0.95)"),
        ("bool_and(prediction = 1)", "bool_and(prediction = 1)"),
        ("list(id ORDER BY id)", "list(id ORDER BY id)"),
        ("avg(", "avg("),  # unreadable: DuckDB names the error
    ],
)
def test_conditions_in_numeric_aggregates_are_cast(written: str, run: str) -> None:
    assert numeric_conditions(written, boolean_columns={"flag"}) == run


def test_the_rewritten_expressions_run_in_duckdb() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 0.9, true), (0, 0.2, false), (1, 0.4, true), "
        "(2, 0.8, false)) v(prediction, score, flag)"
    )
    with pytest.raises(duckdb.BinderException, match="BOOLEAN"):
        con.sql("SELECT avg(prediction = 1) FROM t").fetchall()
    query = ", ".join(
        numeric_conditions(e, boolean_columns={"flag"})
        for e in ("avg(prediction = 1)", "sum(prediction = 1 AND score > 0.5)", "avg(flag)")
    )
    assert con.sql(f"SELECT {query} FROM t").fetchall() == [(0.5, 1, 0.5)]


def test_a_plain_call_skips_the_parser_unless_its_column_is_a_condition() -> None:
    assert numeric_conditions("avg(score)", boolean_columns={"flag"}) == "avg(score)"
    assert numeric_conditions("AVG( flag )", boolean_columns={"flag"}) == "AVG(CAST(flag AS INT))"
    assert numeric_conditions("sum(true)") == "SUM(CAST(TRUE AS INT))"
