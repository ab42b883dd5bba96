"""sql/model_info.py + sql/training/info.py/explain.py: a trained model's facts, checked against
the libraries and against its own predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import inferline.sql
from inferline.errors import SqlError
from inferline.sql import SqlConnection

ROWS = 150


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlConnection]:
    store = Path(tmp_path_factory.mktemp("store"))
    connection = inferline.sql.connect(store=str(store))
    rng = np.random.default_rng(11)
    x = rng.normal(5.0, 2.0, ROWS)
    colour = rng.choice(np.array(["red", "blue", "green"]), ROWS)
    y = 1.5 * x + np.where(colour == "red", 4.0, 0.0) + rng.normal(0, 0.5, ROWS)
    table = pa.table(
        {"id": np.arange(ROWS), "x": x, "colour": colour, "y": y, "big": np.where(y > 10, "yes", "no")}
    )
    connection.raw.register("generated", table)
    connection.raw.execute("CREATE TABLE rows AS SELECT * FROM generated")
    connection.sql(
        "CREATE MODEL ds.linear OPTIONS(model_type='linear_reg', input_label_cols=['y']) "
        "AS SELECT x, colour, y FROM rows;"
        "CREATE MODEL ds.trees OPTIONS(model_type='boosted_tree_regressor', input_label_cols=['y'], "
        "max_iterations=3, early_stop=FALSE, enable_global_explain=TRUE) AS SELECT x, colour, y FROM rows;"
        "CREATE MODEL ds.clusters OPTIONS(model_type='kmeans', num_clusters=2) AS SELECT x, y FROM rows;"
        "CREATE MODEL ds.colours OPTIONS(model_type='logistic_reg', input_label_cols=['colour']) "
        "AS SELECT x, y, big, colour FROM rows"
    )
    try:
        yield connection
    finally:
        connection.close()


def _rows(con: SqlConnection, query: str) -> list[dict[str, Any]]:
    result = con.sql(query)
    return [dict(zip(result.columns, row, strict=True)) for row in result.fetchall()]


def _data(con: SqlConnection) -> dict[str, np.ndarray]:
    return con.raw.execute("SELECT * FROM rows ORDER BY id").fetchnumpy()


def test_training_info(con: SqlConnection) -> None:
    [linear] = _rows(con, "SELECT * FROM ML.TRAINING_INFO(MODEL ds.linear)")
    predicted = [
        r[0]
        for r in con.sql(
            "SELECT predicted_y FROM ML.PREDICT(MODEL ds.linear, TABLE rows) ORDER BY id"
        ).fetchall()
    ]
    assert linear["iteration"] == 0 and linear["eval_loss"] is None
    assert linear["loss"] == pytest.approx(np.mean((_data(con)["y"] - np.array(predicted)) ** 2))
    trees = _rows(con, "SELECT * FROM ML.TRAINING_INFO(MODEL ds.trees) ORDER BY iteration")
    assert [r["iteration"] for r in trees] == [0, 1, 2]
    assert trees[0]["loss"] > trees[1]["loss"] > trees[2]["loss"]
    assert {r["learning_rate"] for r in trees} == {0.3}


def test_feature_info(con: SqlConnection) -> None:
    x = _data(con)["x"]
    rows = {r["input"]: r for r in _rows(con, "SELECT * FROM ML.FEATURE_INFO(MODEL ds.linear)")}
    assert rows["x"]["mean"] == pytest.approx(x.mean()) and rows["x"]["median"] == pytest.approx(np.median(x))
    assert rows["x"]["stddev"] == pytest.approx(x.std(ddof=1)) and rows["x"]["min"] == pytest.approx(x.min())
    assert (rows["colour"]["category_count"], rows["colour"]["null_count"], rows["colour"]["mean"]) == (
        3,
        0,
        None,
    )


def test_weights_reproduce_the_predictions(con: SqlConnection) -> None:
    rows = {r["processed_input"]: r for r in _rows(con, "SELECT * FROM ML.WEIGHTS(MODEL ds.linear)")}
    assert list(rows) == ["x", "colour", "__INTERCEPT__"]
    colour = {c["category"]: c["weight"] for c in rows["colour"]["category_weights"]}
    data = _data(con)
    by_hand = rows["__INTERCEPT__"]["weight"] + rows["x"]["weight"] * data["x"]
    by_hand += np.array([colour[c] for c in data["colour"]])
    predicted = con.sql(
        "SELECT predicted_y FROM ML.PREDICT(MODEL ds.linear, TABLE rows) ORDER BY id"
    ).fetchnumpy()
    np.testing.assert_allclose(by_hand, predicted["predicted_y"], rtol=1e-9)
    standard = _rows(con, "SELECT weight FROM ML.WEIGHTS(MODEL ds.linear, STRUCT(TRUE AS standardize))")
    assert standard[0]["weight"] == pytest.approx(rows["x"]["weight"] * data["x"].std())


def test_multiclass_weights_per_class_label_reproduce_the_probabilities(con: SqlConnection) -> None:
    result = con.sql("SELECT * FROM ML.WEIGHTS(MODEL ds.colours)")
    assert result.columns == ["processed_input", "weight", "category_weights", "class_label"]
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.fetchall()]
    # BigQuery: one row per <class_label, processed_input>
    assert [(r["class_label"], r["processed_input"]) for r in rows] == [
        (label, name) for label in ("blue", "green", "red") for name in ("x", "y", "big", "__INTERCEPT__")
    ]
    data = _data(con)
    scores = []
    for label in ("blue", "green", "red"):
        mine = {r["processed_input"]: r for r in rows if r["class_label"] == label}
        big = {c["category"]: c["weight"] for c in mine["big"]["category_weights"]}
        assert mine["big"]["weight"] is None and set(big) == {"no", "yes"}
        score = (
            mine["__INTERCEPT__"]["weight"]
            + mine["x"]["weight"] * data["x"]
            + mine["y"]["weight"] * data["y"]
        )
        scores.append(score + np.array([big[b] for b in data["big"]]))
    logits = np.column_stack(scores)
    by_hand = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = _rows(
        con, "SELECT predicted_colour_probs FROM ML.PREDICT(MODEL ds.colours, TABLE rows) ORDER BY id"
    )
    probs = np.array([[p["prob"] for p in r["predicted_colour_probs"]] for r in predicted])
    np.testing.assert_allclose(by_hand, probs, rtol=1e-7)


def test_centroids_equal_kmeans_on_the_original_scale(con: SqlConnection) -> None:
    from sklearn.cluster import KMeans

    data = _data(con)
    points = np.column_stack([data["x"], data["y"]])
    mean, std = points.mean(axis=0), points.std(axis=0)
    kmeans = KMeans(n_clusters=2, max_iter=20, random_state=0).fit((points - mean) / std)
    rows = _rows(con, "SELECT * FROM ML.CENTROIDS(MODEL ds.clusters) ORDER BY centroid_id, feature")
    got = np.array([[r["numerical_value"] for r in rows if r["centroid_id"] == k] for k in (1, 2)])
    np.testing.assert_allclose(got, kmeans.cluster_centers_ * std + mean, rtol=1e-9)


def test_explain_predict_linear_is_exact(con: SqlConnection) -> None:
    rows = _rows(
        con,
        "SELECT * FROM ML.EXPLAIN_PREDICT(MODEL ds.linear, (SELECT * FROM rows ORDER BY id LIMIT 5), "
        "STRUCT(2 AS top_k_features))",
    )
    weights = {
        r["processed_input"]: r["weight"] for r in _rows(con, "SELECT * FROM ML.WEIGHTS(MODEL ds.linear)")
    }
    mean = _data(con)["x"].mean()
    for row in rows:
        parts = {a["feature"]: a["attribution"] for a in row["top_feature_attributions"]}
        assert parts["x"] == pytest.approx(weights["x"] * (row["x"] - mean))
        assert row["baseline_prediction_value"] + sum(parts.values()) == pytest.approx(row["predicted_y"])
        assert (
            row["prediction_value"] == pytest.approx(row["predicted_y"]) and row["approximation_error"] < 1e-9
        )


def test_explain_predict_trees_are_xgboost_shap_values(con: SqlConnection) -> None:
    import xgboost as xgb

    data = _data(con)
    codes = np.select(
        [data["colour"] == "blue", data["colour"] == "green"], [0.0, 1.0], 2.0
    )  # label encoding
    matrix = np.column_stack([data["x"], codes])
    params = {"eta": 0.3, "max_depth": 6, "lambda": 1.0, "tree_method": "hist", "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(matrix, label=data["y"]), num_boost_round=3)
    contributions = booster.predict(xgb.DMatrix(matrix[:4]), pred_contribs=True)
    rows = _rows(
        con, "SELECT * FROM ML.EXPLAIN_PREDICT(MODEL ds.trees, (SELECT * FROM rows ORDER BY id LIMIT 4))"
    )
    for row, want in zip(rows, contributions, strict=True):
        got = {a["feature"]: a["attribution"] for a in row["top_feature_attributions"]}
        np.testing.assert_allclose([got["x"], got["colour"]], want[:2], rtol=1e-5)
        assert row["baseline_prediction_value"] == pytest.approx(want[2], rel=1e-5)
        assert row["prediction_value"] == pytest.approx(row["predicted_y"], rel=1e-5)
    explained = _rows(con, "SELECT * FROM ML.GLOBAL_EXPLAIN(MODEL ds.trees)")
    everything = booster.predict(xgb.DMatrix(matrix), pred_contribs=True)
    assert [r["feature"] for r in explained] == ["x", "colour"]
    np.testing.assert_allclose(
        [r["attribution"] for r in explained], np.abs(everything[:, :2]).mean(axis=0), rtol=1e-4
    )


def test_detect_anomalies_flags_about_the_contamination(con: SqlConnection) -> None:
    query = (
        "SELECT count(*) FILTER (WHERE is_anomaly) AS n, min(normalized_distance) AS low FROM "
        "ML.DETECT_ANOMALIES(MODEL ds.clusters, STRUCT(0.1 AS contamination), (SELECT x, y FROM rows))"
    )
    [(count, low)] = con.sql(query).fetchall()
    assert 10 <= count <= 20 and low >= 0
    far = con.sql(
        "SELECT is_anomaly FROM ML.DETECT_ANOMALIES(MODEL ds.clusters, STRUCT(0.1 AS contamination), "
        "(SELECT 100.0 AS x, -50.0 AS y))"
    ).fetchall()
    assert far == [(True,)]


def test_evaluate_kmeans_without_a_label(con: SqlConnection) -> None:
    from sklearn.metrics import davies_bouldin_score

    data = _data(con)
    points = np.column_stack([data["x"], data["y"]])
    scaled = (points - points.mean(axis=0)) / points.std(axis=0)
    ids = con.sql(
        "SELECT CENTROID_ID FROM ML.PREDICT(MODEL ds.clusters, TABLE rows) ORDER BY id"
    ).fetchnumpy()
    [row] = _rows(con, "SELECT * FROM ML.EVALUATE(MODEL ds.clusters)")
    assert row["davies_bouldin_index"] == pytest.approx(davies_bouldin_score(scaled, ids["CENTROID_ID"]))
    assert row["mean_squared_distance"] > 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "SELECT * FROM ML.WEIGHTS(MODEL ds.clusters)",
            r"ML.WEIGHTS takes linear_reg and logistic_reg models, not kmeans",
        ),
        ("SELECT * FROM ML.CENTROIDS(MODEL ds.linear)", r"ML.CENTROIDS takes kmeans models, not linear_reg"),
        (
            "SELECT * FROM ML.WEIGHTS(MODEL ds.linear, STRUCT(1 AS top_k))",
            r"option top_k is not supported \(supported: standardize\)",
        ),
        (
            "SELECT * FROM ML.DETECT_ANOMALIES(MODEL ds.clusters, STRUCT(0.9 AS contamination), TABLE rows)",
            r"needs STRUCT\(0.02 AS contamination\), a number between 0 and 0.5",
        ),
        (
            "SELECT * FROM ML.EXPLAIN_PREDICT(MODEL ds.clusters, TABLE rows)",
            r"feature attributions need a linear",
        ),
        ("SELECT * FROM ML.GLOBAL_EXPLAIN(MODEL ds.linear)", r"OPTIONS\(enable_global_explain=TRUE\)"),
    ],
)
def test_errors_name_the_function_and_model(con: SqlConnection, query: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        con.sql(query)
