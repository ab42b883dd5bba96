"""BigQuery's names for tables and models, mapped to local DuckDB names one way for both."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.errors import SqlError
from inferline.sql import SqlConnection

FEATURES = "sepal_length, sepal_width, petal_length, petal_width"


def _rows(con: SqlConnection, query: str) -> list[tuple[object, ...]]:
    relation = con.sql(query)
    assert relation is not None
    return relation.fetchall()


def test_project_qualified_tables_and_models_name_the_same_local_objects(
    con: SqlConnection, iris_example: Path
) -> None:
    con.sql(
        "CREATE SCHEMA ml_datasets; "
        f"CREATE TABLE ml_datasets.iris AS SELECT {FEATURES}, CAST(id AS VARCHAR) AS id FROM flowers;"
        f"CREATE MODEL `myproject.mydataset.mymodel` "
        f"OPTIONS(model_type='sklearn', model_path='{iris_example}/models/iris-*.joblib')"
    )
    expected = _rows(
        con, "SELECT id, predicted_label FROM ML.PREDICT(MODEL ds.iris, TABLE ml_datasets.iris) ORDER BY id"
    )
    for model, table in [
        ("`myproject.mydataset.mymodel`", "`bigquery-public-data.ml_datasets.iris`"),
        ("mydataset.mymodel", "bigquery-public-data.ml_datasets.iris"),
        ("`myproject`.`mydataset`.`mymodel`", "`myproject`.ml_datasets.iris"),
    ]:
        got = _rows(
            con, f"SELECT id, predicted_label FROM ML.PREDICT(MODEL {model}, TABLE {table}) ORDER BY id"
        )
        assert got == expected
    # Statements without BigQuery-ML take the same names; DuckDB's own catalogs stay DuckDB's.
    for table in (
        "`myproject.ml_datasets.iris`",
        "bigquery-public-data.ml_datasets.iris",
        "p.ml_datasets.iris",
    ):
        assert _rows(con, f"SELECT count(*) FROM {table}") == [(150,)]
    assert _rows(con, "SELECT count(*) FROM memory.ml_datasets.iris") == [(150,)]
    con.sql("DROP MODEL myproject:mydataset.mymodel")
    with pytest.raises(SqlError, match=r"model 'mydataset.mymodel' not found"):
        con.sql("SELECT * FROM ML.PREDICT(MODEL mydataset.mymodel, TABLE ml_datasets.iris)")
    con.sql(
        f"CREATE MODEL `myproject.mydataset.mymodel` "
        f"OPTIONS(model_type='sklearn', model_path='{iris_example}/models/iris-*.joblib');"
        "DROP MODEL `myproject:mydataset.mymodel`"
    )
    with pytest.raises(SqlError, match=r"model 'mydataset.mymodel' not found"):
        con.sql("SELECT * FROM ML.PREDICT(MODEL `myproject.mydataset.mymodel`, TABLE ml_datasets.iris)")


def test_ml_predict_takes_what_bigquery_takes_as_its_input(con: SqlConnection) -> None:
    expected = _rows(
        con, f"SELECT predicted_label FROM ML.PREDICT(MODEL ds.iris, (SELECT {FEATURES} FROM flowers))"
    )
    forms = [
        f"ML.PREDICT(MODEL ds.iris, (WITH x AS (SELECT {FEATURES} FROM flowers) SELECT * FROM x))",
        f"ML.PREDICT(MODEL ds.iris, (SELECT {FEATURES} FROM flowers), STRUCT())",
        "ML.PREDICT(MODEL `ds.iris`, TABLE x)",
    ]
    for form in forms:
        got = _rows(con, f"WITH x AS (SELECT {FEATURES} FROM flowers) SELECT predicted_label FROM {form}")
        assert got == expected


def test_object_table_options_and_signed_urls(con: SqlConnection, tmp_path: Path) -> None:
    folder = tmp_path / "my images"
    folder.mkdir()
    for name in ("a b.png", "c.png"):
        (folder / name).write_bytes(b"\x89PNG")
    con.sql(
        "CREATE OR REPLACE EXTERNAL TABLE `myproject.mydataset.objects` WITH CONNECTION `us.my-connection` "
        f"OPTIONS(object_metadata = 'SIMPLE', uris = ['{folder}/*'], max_staleness = INTERVAL 1 DAY, "
        "metadata_cache_mode = 'AUTOMATIC')"
    )
    rows = _rows(
        con,
        "SELECT uri, signed_url FROM EXTERNAL_OBJECT_TRANSFORM(TABLE `myproject.mydataset.objects`, "
        "['SIGNED_URL']) ORDER BY uri",
    )
    assert rows == [(str(folder / n), (folder / n).as_uri()) for n in ("a b.png", "c.png")]
    with pytest.raises(
        SqlError, match=r"EXTERNAL_OBJECT_TRANSFORM takes TABLE object_table and \['SIGNED_URL'\]"
    ):
        con.sql("SELECT * FROM EXTERNAL_OBJECT_TRANSFORM(TABLE mydataset.objects, ['READ_URL'])")


def test_create_model_checks_the_model_file(con: SqlConnection, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere-*.joblib"
    with pytest.raises(SqlError) as raised:
        con.sql(f"CREATE MODEL ds.m OPTIONS(model_type='sklearn', model_path='{missing}')")
    assert str(raised.value) == (
        f"statement 1: CREATE MODEL ds.m: model_path '{missing}' matches no file; give a trained model's "
        "file, or a glob such as 'models/iris-*.onnx' (the newest match is used)"
    )
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(
        SqlError, match=rf"^statement 1: CREATE MODEL ds.m: cannot load model_path '{junk}': "
    ):
        con.sql(f"CREATE MODEL ds.m OPTIONS(model_type='onnx', model_path='{junk}')")
    with pytest.raises(SqlError, match=r"model 'ds.m' not found"):  # nothing was registered
        con.sql("SELECT * FROM ML.PREDICT(MODEL ds.m, (SELECT 1.0 AS a))")
