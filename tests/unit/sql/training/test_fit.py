"""sql/training/fit.py: each model type's Pipeline equals the library fit directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import inferline.sql
from inferline.errors import SqlError
from inferline.sql.training import fit, parse_options
from inferline.sql.training.fit import log_loss

WHERE = "CREATE MODEL ds.m"


def _table(rows: int = 80) -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.normal(size=rows)
    colour = np.where(np.arange(rows) % 2 == 0, "red", "blue")
    y = 3 * x + np.where(colour == "red", 10.0, 0.0)
    return pa.table(
        {
            "x": pa.array([None, *x[1:]], pa.float64()),
            "colour": colour.tolist(),
            "y": y,
            "big": np.where(y > 5, "yes", "no").tolist(),
        }
    )


def test_linear_imputes_scales_and_one_hot_encodes() -> None:
    table = _table().drop_columns(["big"])
    options = parse_options({"model_type": "linear_reg", "input_label_cols": ["y"]}, WHERE)
    fitted = fit(table, options, WHERE)
    assert fitted.features == ["x", "colour"]
    assert fitted.pipeline.text_inputs_ == ["colour"]
    assert fitted.held_out.num_rows == 80  # nothing held out: ML.EVALUATE uses the training rows
    assert fitted.summary["training_rows"] == 80 and fitted.summary["evaluation_rows"] == 0
    matrix = np.array([[1.0, "red"], [1.0, "blue"]], dtype=object)
    np.testing.assert_allclose(fitted.pipeline.predict(matrix), [13.0, 3.0], atol=0.3)
    [info] = fitted.pipeline.training_info_
    assert info["iteration"] == 0 and info["loss"] == pytest.approx(0.0, abs=0.1)


def test_boosted_tree_equals_xgboost_directly() -> None:
    import xgboost as xgb

    table = _table().drop_columns(["big"])
    options = parse_options(
        {"model_type": "boosted_tree_regressor", "input_label_cols": ["y"], "max_iterations": 5.0,
         "early_stop": False, "max_tree_depth": 3.0},
        WHERE,
    )  # fmt: skip
    fitted = fit(table, options, WHERE)
    assert len(fitted.pipeline.training_info_) == 5
    x = np.asarray(table.column("x").to_numpy(zero_copy_only=False), dtype=np.float64)
    x[0] = np.nanmean(x)
    red = np.asarray(table.column("colour").to_pylist()) == "red"
    matrix = np.column_stack([x, red.astype(np.float64)])  # label encoding: blue 0, red 1
    params = {"eta": 0.3, "max_depth": 3, "lambda": 1.0, "tree_method": "hist", "seed": 0,
              "objective": "reg:squarederror"}  # fmt: skip
    direct = xgb.train(params, xgb.DMatrix(matrix, label=table.column("y").to_numpy()), num_boost_round=5)
    rows = np.column_stack([x, np.where(red, "red", "blue")]).astype(object)
    rows[:, 0] = x
    np.testing.assert_allclose(fitted.pipeline.predict(rows), direct.predict(xgb.DMatrix(matrix)), rtol=1e-6)


def test_early_stop_ends_on_little_progress() -> None:
    table = _table(600).drop_columns(["big"])
    options = parse_options(
        {"model_type": "boosted_tree_regressor", "input_label_cols": ["y"], "max_iterations": 50.0,
         "min_rel_progress": 0.2},
        WHERE,
    )  # fmt: skip
    info = fit(table, options, WHERE).pipeline.training_info_
    assert 2 <= len(info) < 50
    assert all(row["eval_loss"] is not None for row in info)  # AUTO_SPLIT held 20% out (600 rows)


@pytest.mark.parametrize(
    ("model_type", "extra"),
    [
        ("boosted_tree_classifier", {"max_iterations": 5.0}),
        ("random_forest_classifier", {"num_parallel_tree": 10.0}),
        ("dnn_classifier", {"max_iterations": 200.0, "learn_rate": 0.01, "hidden_units": [8.0]}),
    ],
)
def test_classifier_types_give_classes_and_probabilities(model_type: str, extra: dict[str, float]) -> None:
    table = _table().drop_columns(["y"])
    options = parse_options({"model_type": model_type, "input_label_cols": ["big"], **extra}, WHERE)
    pipeline = fit(table, options, WHERE).pipeline
    matrix = np.array([[2.0, "red"], [-2.0, "blue"]], dtype=object)
    assert list(pipeline.classes_) == ["no", "yes"]
    np.testing.assert_allclose(pipeline.predict_proba(matrix).sum(axis=1), 1.0, rtol=1e-5)
    assert list(pipeline.predict(matrix)) == ["yes", "no"]


def test_kmeans_and_pca_take_every_column() -> None:
    table = _table().drop_columns(["big", "y"])
    kmeans = fit(table, parse_options({"model_type": "kmeans", "num_clusters": 2.0}, WHERE), WHERE).pipeline
    ids = kmeans.predict(np.array([[3.0, "red"], [-3.0, "blue"]], dtype=object))
    assert sorted(ids.tolist()) == [1, 2]  # BigQuery's CENTROID_ID is 1-based
    pca = fit(
        table, parse_options({"model_type": "pca", "num_principal_components": 2.0}, WHERE), WHERE
    ).pipeline
    assert pca.predict(np.array([[0.0, "red"]], dtype=object)).shape == (1, 2)
    with pytest.raises(SqlError, match=r"num_clusters=90 is more than the 80 training rows"):
        fit(table, parse_options({"model_type": "kmeans", "num_clusters": 90.0}, WHERE), WHERE)
    with pytest.raises(SqlError, match=r"num_clusters must be a whole number between 2 and 100, got 101"):
        parse_options({"model_type": "kmeans", "num_clusters": 101.0}, WHERE)


@pytest.mark.parametrize(("rows", "clusters"), [(40, 2), (1_000, 3)])
def test_kmeans_without_num_clusters_takes_bigquerys_default(
    tmp_path: Path, rows: int, clusters: int
) -> None:
    """BigQuery picks num_clusters from the training row count when it is left out: log10(n),
    at least 2 (kmeans trains on every row: 1,000 rows give 3 centroids)."""
    con = inferline.sql.connect(store=str(tmp_path))
    try:
        con.sql(
            f"CREATE MODEL ds.k OPTIONS(model_type='kmeans') AS "
            f"SELECT (i % 7)::DOUBLE AS a, (i % 11)::DOUBLE AS b FROM range({rows}) t(i)"
        )
        ids = con.sql("SELECT DISTINCT centroid_id FROM ML.CENTROIDS(MODEL ds.k)").fetchall()
    finally:
        con.close()
    assert sorted(i for (i,) in ids) == list(range(1, clusters + 1))


def test_dart_booster_equals_xgboost_dart_directly(tmp_path: Path) -> None:
    """booster_type='DART' trains XGBoost's dart booster with BigQuery's DART options:
    dart_normalize_type -> normalize_type, dropout -> rate_drop."""
    import xgboost as xgb

    table = _table().drop_columns(["big"]).filter(pa.array([True] + [False] + [True] * 78))
    con = inferline.sql.connect(store=str(tmp_path))
    try:
        con.raw.register("generated", table)
        con.sql(
            "CREATE MODEL ds.dart OPTIONS(model_type='boosted_tree_regressor', input_label_cols=['y'], "
            "booster_type='DART', dart_normalize_type='FOREST', dropout=0.3, max_iterations=6, "
            "early_stop=FALSE, max_tree_depth=3) AS SELECT x, colour, y FROM generated"
        )
        got = con.sql("SELECT predicted_y FROM ML.PREDICT(MODEL ds.dart, TABLE generated)").fetchall()
        with pytest.raises(SqlError, match=r"dropout applies to booster_type='DART'"):
            con.sql(
                "CREATE MODEL ds.gb OPTIONS(model_type='boosted_tree_regressor', input_label_cols=['y'], "
                "dropout=0.3) AS SELECT x, colour, y FROM generated"
            )
    finally:
        con.close()
    x = np.asarray(table.column("x").to_numpy(zero_copy_only=False), dtype=np.float64)
    x[0] = np.nanmean(x)
    red = np.asarray(table.column("colour").to_pylist()) == "red"
    matrix = np.column_stack([x, red.astype(np.float64)])  # label encoding: blue 0, red 1
    params = {"booster": "dart", "normalize_type": "forest", "rate_drop": 0.3, "eta": 0.3, "max_depth": 3,
              "lambda": 1.0, "tree_method": "hist", "seed": 0, "objective": "reg:squarederror"}  # fmt: skip
    direct = xgb.train(params, xgb.DMatrix(matrix, label=table.column("y").to_numpy()), num_boost_round=6)
    plain = {k: v for k, v in params.items() if k not in ("booster", "normalize_type", "rate_drop")}
    gbtree = xgb.train(plain, xgb.DMatrix(matrix, label=table.column("y").to_numpy()), num_boost_round=6)
    want = direct.predict(xgb.DMatrix(matrix))
    assert not np.allclose(want, gbtree.predict(xgb.DMatrix(matrix)))  # the dropout changed the trees
    np.testing.assert_allclose([v for (v,) in got], want, rtol=1e-5)


@pytest.mark.parametrize(
    ("labels", "classes"),
    [(["no", "yes", "yes", "no"], ["no", "yes"]), ([2, 0, 1, 2], [0, 1, 2])],
)
def test_log_loss_equals_scikit_learns(labels: list[object], classes: list[object]) -> None:
    from sklearn import metrics

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(len(classes)), size=len(labels))
    probabilities[0] = np.eye(len(classes))[len(classes) - 1]  # a zero for the true class: clipped
    y = np.asarray(labels, dtype=object if isinstance(labels[0], str) else np.int64)
    expected = metrics.log_loss(y, probabilities, labels=classes)
    assert log_loss(y, probabilities, np.asarray(classes)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="y_true contains values .* not belonging to the passed labels"):
        log_loss(y, probabilities[:, :-1], np.asarray(classes[:-1]))
