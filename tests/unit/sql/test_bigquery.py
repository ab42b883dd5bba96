"""BigQuery-ML statements translated to DuckDB: CREATE MODEL, ML.PREDICT, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferline.errors import SqlError
from inferline.sql import SqlConnection
from inferline.sql.bigquery import is_bigquery_ml
from inferline.sql.connect import split_statements

FEATURES = "sepal_length, sepal_width, petal_length, petal_width"


def _rows(con: SqlConnection, query: str) -> Any:
    table = con.fetch(con.run_script(query))
    assert table is not None
    return table


def test_ml_predict_sklearn_returns_label_then_the_subquery_columns(
    con: SqlConnection, iris_model: Any
) -> None:
    table = _rows(
        con,
        f"SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT {FEATURES}, CAST(id AS VARCHAR) AS id "
        "FROM flowers)) "
        "ORDER BY CAST(id AS INT)",
    )
    assert table.column_names == ["predicted_label", *FEATURES.split(", "), "id"]
    features = np.column_stack([table.column(c).to_numpy() for c in FEATURES.split(", ")])
    np.testing.assert_array_equal(table.column("predicted_label").to_numpy(), iris_model.predict(features))


def test_ml_predict_onnx_uses_the_graph_output_names(con: SqlConnection) -> None:
    table = _rows(con, f"SELECT * FROM ML.PREDICT(MODEL `ds.iris_onnx`, (SELECT {FEATURES} FROM flowers))")
    assert table.column_names[:2] == ["label", "probabilities"]
    assert len(table.column("probabilities")[0].as_py()) == 3


def test_ml_predict_input_clause_picks_columns_and_output_clause_names(
    con: SqlConnection, iris_example: Path
) -> None:
    con.sql(
        f"CREATE OR REPLACE MODEL ds.named INPUT({', '.join(f + ' FLOAT64' for f in FEATURES.split(', '))}) "
        "OUTPUT(species INT64, scores ARRAY<FLOAT64>) "
        f"OPTIONS(model_type='onnx', model_path='{iris_example}/models/iris-*.onnx')"
    )
    table = _rows(
        con,
        "WITH f AS (SELECT * FROM flowers) "
        "SELECT p.id, p.species, p.target FROM ML.PREDICT(MODEL ds.named, TABLE f) AS p ORDER BY p.id",
    )
    assert table.column_names == ["id", "species", "target"]
    agree = (table.column("species").to_numpy() == table.column("target").to_numpy()).mean()
    assert agree > 0.95


def test_ml_predict_joins_like_a_table(con: SqlConnection) -> None:
    con.sql(
        "CREATE TABLE species AS SELECT * FROM "
        "(VALUES (0, 'setosa'), (1, 'versicolor'), (2, 'virginica')) t(k, name)"
    )
    table = _rows(
        con,
        f"SELECT s.name, COUNT(*) AS n FROM ML.PREDICT(MODEL ds.iris, (SELECT {FEATURES} FROM flowers)) AS p "
        "JOIN species AS s ON s.k = p.predicted_label GROUP BY s.name ORDER BY s.name",
    )
    assert table.column("name").to_pylist() == ["setosa", "versicolor", "virginica"]
    assert sum(table.column("n").to_pylist()) == 150


def test_too_many_numeric_columns_say_how_to_pick_them(con: SqlConnection) -> None:
    message = r"statement 1: ML.PREDICT\(MODEL ds.iris\): the model takes 4 features .* INPUT"
    with pytest.raises(SqlError, match=message):
        con.run_script("SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT * FROM flowers))")


def test_create_model_replace_and_drop(con: SqlConnection, iris_example: Path) -> None:
    path = f"{iris_example}/models/iris-*.joblib"
    con.sql(f"CREATE MODEL IF NOT EXISTS ds.iris OPTIONS(model_type='sklearn', model_path='{path}')")
    con.sql("DROP MODEL ds.iris")
    with pytest.raises(SqlError, match=r"statement 1: model 'ds.iris' not found"):
        con.fetch(con.run_script("SELECT predict('ds.iris', 1.0, 2.0, 3.0, 4.0)"))
    with pytest.raises(SqlError, match=r"statement 1: DROP MODEL ds.iris: no such model"):
        con.sql("DROP MODEL ds.iris")
    con.sql("DROP MODEL IF EXISTS ds.iris")


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELECT * FROM ML.FORECAST(MODEL ds.iris)", r"ML.FORECAST is not supported"),
        (
            "SELECT * FROM ML.TRAINING_INFO(MODEL ds.iris)",
            r"ML.TRAINING_INFO\(MODEL ds.iris\): model ds.iris/\S+ was not trained by CREATE MODEL",
        ),
        (
            "CREATE MODEL ds.lr OPTIONS(model_type='arima_plus') AS SELECT 1 AS y",
            r"CREATE MODEL ds.lr: training \(model_type='arima_plus'\) is not supported; "
            r"trained here: model_type='linear_reg'\|'logistic_reg'\|'boosted_tree_regressor'",
        ),
        (
            "CREATE MODEL ds.lr TRANSFORM(x * 2 AS x2) OPTIONS(model_type='sklearn', model_path='m.joblib')",
            r"CREATE MODEL ds.lr: TRANSFORM\(...\) applies to models trained here",
        ),
        (
            "CREATE MODEL ds.m OPTIONS(model_type='sklearn', model_path='m.joblib') AS SELECT 1",
            r"training \(AS SELECT ...\) is not supported",
        ),
        ("CREATE MODEL ds.m OPTIONS(model_type='onnx')", r"CREATE MODEL ds.m: needs OPTIONS\(model_type="),
        (
            "CREATE MODEL ds.m OPTIONS(model_type='onnx', model_path='m.onnx', kms_key_name='k')",
            r"option 'kms_key_name' is not supported",
        ),
        ("ALTER MODEL ds.iris SET OPTIONS(description='x')", r"ALTER MODEL is not supported"),
        (
            "CREATE OR REPLACE MODEL `mydataset.gemini` REMOTE WITH CONNECTION `us.example_connection` "
            "OPTIONS (ENDPOINT = 'gemini-2.0-flash')",
            r"ENDPOINT='gemini-2.0-flash' names a Google-hosted model, which runs only in BigQuery",
        ),
        (
            "SELECT * FROM ML.GENERATE_TEXT(MODEL `mydataset.gemini`, (SELECT 'hi' AS prompt))",
            r"ML.GENERATE_TEXT is not supported",
        ),
        (
            "SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT 1.0 AS a), STRUCT(5 AS top_k))",
            r"ML.PREDICT\(MODEL ds.iris\): option top_k is not supported \(supported: threshold\)",
        ),
        (
            "SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT 1.0 AS a), STRUCT(1.5 AS threshold))",
            r"ML.PREDICT\(MODEL ds.iris\): threshold must be a number between 0 and 1, got 1.5",
        ),
        (
            "CREATE EXTERNAL TABLE ds.t OPTIONS(uris=['x/*'], object_metadata='DIRECTORY')",
            r"object_metadata='DIRECTORY' is not supported",
        ),
        ("CREATE EXTERNAL TABLE ds.t OPTIONS(uris=['x/*'])", r"needs object_metadata='SIMPLE'"),
        ("CREATE EXTERNAL TABLE ds.t OPTIONS(object_metadata='SIMPLE')", r"needs OPTIONS\(uris="),
        (
            "CREATE EXTERNAL TABLE ds.t OPTIONS(uris=['x/*'], format='CSV', skip_leading_rows=1)",
            r"option 'skip_leading_rows' is not supported",
        ),
        ("SELECT ML.DECODE_IMAGE(a, b) FROM t", r"ML.DECODE_IMAGE takes one argument"),
        ("SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT * FROM", r"cannot parse as BigQuery SQL"),
    ],
)
def test_unsupported_constructs_name_statement_and_construct(
    con: SqlConnection, statement: str, message: str
) -> None:
    with pytest.raises(SqlError, match=r"^statement 2: ((CREATE|ML)[^:]*: )?" + message):
        con.run_script(f"SELECT 1; {statement}")


def test_plain_duckdb_sql_is_not_translated() -> None:
    assert not is_bigquery_ml("SELECT predict('iris', a, b) FROM t")
    assert not is_bigquery_ml("SELECT x::INT, $$a;b$$ FROM read_csv('f.csv')")
    assert is_bigquery_ml("create or replace model ds.m options(model_type='onnx', model_path='m.onnx')")
    assert is_bigquery_ml("SELECT * FROM ML.PREDICT(MODEL m, TABLE t)")
    assert is_bigquery_ml("CREATE EXTERNAL TABLE ds.t OPTIONS(uris=['a/*'], object_metadata='SIMPLE')")


def test_split_statements_ignores_semicolons_in_strings_and_comments() -> None:
    script = "SELECT 'a;b'; -- c; d\n SELECT $$x;y$$ ;; /* ; */ SELECT 3 -- last"
    assert split_statements(script) == [
        "SELECT 'a;b'",
        "-- c; d\n SELECT $$x;y$$",
        "/* ; */ SELECT 3 -- last",
    ]


def test_duckdb_errors_name_the_statement(con: SqlConnection) -> None:
    with pytest.raises(SqlError, match=r"^statement 3: Catalog Error: Table with name missing does not"):
        con.run_script("SELECT 1; SELECT 2; SELECT * FROM missing")
    with pytest.raises(SqlError, match=r"^no SQL statement given"):
        con.run_script(" -- nothing\n ; ")


def test_execute_translates_too(con: SqlConnection) -> None:
    query = (
        f"SELECT predicted_label FROM ML.PREDICT(MODEL ds.iris, (SELECT {FEATURES} FROM flowers "
        "WHERE id = 0))"
    )
    assert con.execute(query).fetchall() == [(0,)]
    with pytest.raises(SqlError, match=r"statement 1: query parameters .* are not supported with BigQuery"):
        con.execute(query.replace("id = 0", "id = ?"), [0])


def test_decimal_literals_are_numbers(con: SqlConnection) -> None:
    table = _rows(
        con, "SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT 5.1 AS a, 3.5 AS b, 1.4 AS c, 0.2 AS d))"
    )
    assert table.column("predicted_label").to_pylist() == [0]
