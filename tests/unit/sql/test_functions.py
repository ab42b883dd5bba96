"""predict(), predict_scores(), predict_label() as DuckDB functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from inferline.errors import SqlError
from inferline.sql import SqlConnection

FEATURES = "sepal_length, sepal_width, petal_length, petal_width"


def _relation(con: SqlConnection, query: str) -> Any:
    relation = con.sql(query)
    assert relation is not None
    return relation


def test_predict_over_100k_rows_equals_model_predict(con: SqlConnection, iris_model: Any) -> None:
    rng = np.random.default_rng(7)
    matrix = rng.uniform(0.1, 8.0, size=(100_000, 4)).round(2)
    con.raw.register("big_arrow", pa.table({f"f{i}": matrix[:, i] for i in range(4)}))
    con.raw.execute("CREATE TABLE big AS SELECT row_number() OVER () AS i, * FROM big_arrow")
    got = _relation(con, "SELECT predict('ds.iris', f0, f1, f2, f3) AS p FROM big ORDER BY i").fetchnumpy()
    np.testing.assert_array_equal(got["p"], iris_model.predict(matrix).astype(np.float64))


def test_one_list_argument_equals_columns(con: SqlConnection) -> None:
    by_columns = _relation(con, f"SELECT predict('ds.iris', {FEATURES}) FROM flowers ORDER BY id").fetchall()
    by_list = _relation(con, f"SELECT predict('ds.iris', [{FEATURES}]) FROM flowers ORDER BY id").fetchall()
    assert by_columns == by_list
    assert len(by_columns) == 150


def test_predict_agrees_with_the_labels_on_iris(con: SqlConnection) -> None:
    [(accuracy,)] = _relation(
        con, f"SELECT avg((predict('ds.iris', {FEATURES}) = target)::INT) FROM flowers"
    ).fetchall()
    assert accuracy > 0.95


def test_predict_scores_and_label(con: SqlConnection) -> None:
    rows = _relation(
        con,
        f"SELECT predict_scores('ds.iris_onnx', {FEATURES}), predict_label('ds.iris', {FEATURES}) "
        "FROM flowers ORDER BY id LIMIT 1",
    ).fetchall()
    scores, label = rows[0]
    assert len(scores) == 3 and label == "0"


def test_null_inputs_give_null_predictions(con: SqlConnection) -> None:
    rows = _relation(
        con, "SELECT predict('ds.iris', x, 3.5, 1.4, 0.2) FROM (VALUES (5.1), (NULL)) AS t(x)"
    ).fetchall()
    assert rows == [(0.0,), (None,)]


def test_model_from_a_column_gives_one_call_per_model(con: SqlConnection) -> None:
    rows = _relation(
        con,
        "SELECT m, predict(m, 5.1, 3.5, 1.4, 0.2) "
        "FROM (VALUES ('ds.iris'), ('ds.iris_onnx')) AS t(m) ORDER BY m",
    ).fetchall()
    assert rows == [("ds.iris", 0.0), ("ds.iris_onnx", 0.0)]


def test_unknown_model_names_the_fix(con: SqlConnection) -> None:
    with pytest.raises(SqlError, match=r"statement 1: model 'nope' not found: register it with CREATE MODEL"):
        con.fetch(con.run_script("SELECT predict('nope', 1.0, 2.0)"))


def test_wrong_number_of_inputs_names_model_and_shape(con: SqlConnection) -> None:
    with pytest.raises(
        SqlError,
        match=r"statement 1: predict\('ds.iris'\): model ds.iris/1 failed on input of shape \(1, 2\)",
    ):
        con.fetch(con.run_script("SELECT predict('ds.iris', 1.0, 2.0)"))


def test_text_labels_point_to_predict_label(con: SqlConnection, tmp_path: Any) -> None:
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier().fit([[0.0], [1.0]], ["cat", "dog"])
    joblib.dump(model, tmp_path / "pets-1.joblib")
    con.sql(f"CREATE MODEL pets OPTIONS(model_type='sklearn', model_path='{tmp_path}/pets-*.joblib')")
    assert _relation(con, "SELECT predict_label('pets', 1.0)").fetchall() == [("dog",)]
    with pytest.raises(SqlError, match=r"predicts text labels; use predict_label"):
        con.fetch(con.run_script("SELECT predict('pets', 1.0)"))


def test_store_models_resolve_by_name(iris_example: Any, tmp_path: Any) -> None:
    import inferline.sql
    from inferline.models.store import ModelStore

    ModelStore(str(tmp_path / "store")).add("iris", str(iris_example / "models" / "iris-1.onnx"))
    with inferline.sql.connect(store=str(tmp_path / "store")) as con:
        assert _relation(con, "SELECT predict('iris', 5.1, 3.5, 1.4, 0.2)").fetchall() == [(0.0,)]
        with pytest.raises(SqlError, match=r"model store .*: no model 'other'"):
            con.fetch(con.run_script("SELECT predict('other', 1.0)"))
