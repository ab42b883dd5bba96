"""ML.EVALUATE: BigQuery ML's metrics for imported classifiers and regressors, checked against
scikit-learn's own metric functions on the same predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from inferline.errors import SqlError
from inferline.sql import SqlConnection

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _one_row(con: SqlConnection, query: str) -> dict[str, Any]:
    table = con.fetch(con.run_script(query))
    assert table is not None and table.num_rows == 1
    return dict(table.to_pylist()[0])


@pytest.fixture
def weak_classifier(tmp_path: Path) -> Path:
    """A logistic regression on two features: wrong often enough for every metric to matter."""
    iris = load_iris()
    model = LogisticRegression(max_iter=300).fit(iris.data[:, :2], iris.target)
    path = tmp_path / "weak-1.joblib"
    joblib.dump(model, path)
    return path


def test_classifier_metrics_match_scikit_learn(con: SqlConnection, weak_classifier: Path) -> None:
    con.run_script(
        f"CREATE MODEL ds.weak INPUT(sepal_length FLOAT64, sepal_width FLOAT64) "
        f"OPTIONS(model_type='sklearn', model_path='{weak_classifier}', input_label_cols=['species'])"
    )
    got = _one_row(
        con,
        "SELECT * FROM ML.EVALUATE(MODEL ds.weak, "
        "(SELECT sepal_length, sepal_width, target AS species FROM flowers))",
    )
    model = joblib.load(weak_classifier)
    iris = load_iris()
    predicted = model.predict(iris.data[:, :2])
    probabilities = model.predict_proba(iris.data[:, :2])
    truth = iris.target
    assert list(got) == ["precision", "recall", "accuracy", "f1_score", "log_loss", "roc_auc"]
    expected = {
        "precision": metrics.precision_score(truth, predicted, average="macro", zero_division=0),
        "recall": metrics.recall_score(truth, predicted, average="macro"),
        "accuracy": metrics.accuracy_score(truth, predicted),
        "f1_score": metrics.f1_score(truth, predicted, average="macro"),
        "log_loss": metrics.log_loss(truth, probabilities),
        "roc_auc": metrics.roc_auc_score(truth, probabilities, multi_class="ovr", average="macro"),
    }
    assert got == pytest.approx(expected, rel=1e-9)
    assert 0.6 < got["accuracy"] < 0.95  # a weak model: the metrics are not trivially 1


def test_the_default_label_column_and_a_table_input(con: SqlConnection, iris_model: Any) -> None:
    con.run_script(f"CREATE TABLE labelled AS SELECT {', '.join(FEATURES)}, target AS label FROM flowers")
    got = _one_row(con, "SELECT accuracy, roc_auc FROM ML.EVALUATE(MODEL ds.iris, TABLE labelled)")
    iris = load_iris()
    assert got["accuracy"] == pytest.approx(
        metrics.accuracy_score(iris.target, iris_model.predict(iris.data))
    )
    assert got["roc_auc"] is None  # the SVC gives no probabilities
    # The ONNX twin names its own output `label` too; the true values still come from `label`.
    onnx = _one_row(con, "SELECT accuracy FROM ML.EVALUATE(MODEL ds.iris_onnx, TABLE labelled)")
    assert onnx["accuracy"] == got["accuracy"]


def test_regressor_metrics_match_scikit_learn(con: SqlConnection, tmp_path: Path) -> None:
    iris = load_iris()
    x, y = iris.data[:, :3], iris.data[:, 3]  # petal width from the other three measures
    model = LinearRegression().fit(x, y)
    joblib.dump(model, tmp_path / "width-1.joblib")
    con.run_script(
        f"CREATE MODEL ds.width INPUT(sepal_length FLOAT64, sepal_width FLOAT64, petal_length FLOAT64) "
        f"OPTIONS(model_type='sklearn', model_path='{tmp_path}/width-*.joblib')"
    )
    got = _one_row(
        con,
        "WITH rows AS (SELECT sepal_length, sepal_width, petal_length, petal_width AS label FROM flowers) "
        "SELECT * FROM ML.EVALUATE(MODEL ds.width, TABLE rows)",
    )
    predicted = model.predict(x)
    assert got == pytest.approx(
        {
            "mean_absolute_error": metrics.mean_absolute_error(y, predicted),
            "mean_squared_error": metrics.mean_squared_error(y, predicted),
            "mean_squared_log_error": None
            if (predicted < 0).any()
            else metrics.mean_squared_log_error(y, predicted),
            "median_absolute_error": metrics.median_absolute_error(y, predicted),
            "r2_score": metrics.r2_score(y, predicted),
            "explained_variance": metrics.explained_variance_score(y, predicted),
        },
        rel=1e-9,
    )


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            f"SELECT * FROM ML.EVALUATE(MODEL ds.iris, (SELECT {', '.join(FEATURES)} FROM flowers))",
            "ML.EVALUATE(MODEL ds.iris): the input has no label column 'label' (columns: sepal_length, "
            "sepal_width, petal_length, petal_width); select the true values AS label, or CREATE MODEL "
            "... OPTIONS(input_label_cols=['name'])",
        ),
        (
            "SELECT * FROM ML.EVALUATE(MODEL ds.iris)",
            "ML.EVALUATE(MODEL ds.iris): without input data, ML.EVALUATE needs a model trained here "
            "by CREATE MODEL ... AS SELECT in this database; give the rows: "
            "ML.EVALUATE(MODEL m, (SELECT ...))",
        ),
        (
            "SELECT * FROM ML.EVALUATE(MODEL ds.iris, TABLE flowers, 0.5)",
            "ML.EVALUATE takes MODEL name and one input, (SELECT ...) or TABLE name, and optionally "
            "STRUCT(0.5 AS threshold)",
        ),
        (
            "SELECT * FROM ML.ROC_CURVE(MODEL ds.iris, TABLE flowers, STRUCT(1 AS trial_id))",
            "ML.ROC_CURVE takes MODEL name and one input, (SELECT ...) or TABLE name, and optionally "
            "thresholds, GENERATE_ARRAY(0.4, 0.6, 0.01) or [0.4, 0.5]",
        ),
        (
            "SELECT * FROM ML.ROC_CURVE(MODEL ds.iris, TABLE flowers, GENERATE_ARRAY(0.5, 2, 0.5))",
            "ML.ROC_CURVE(MODEL ds.iris): thresholds must be numbers between 0 and 1, "
            "got GENERATE_ARRAY(0.5, 2, 0.5)",
        ),
        (
            "CREATE MODEL ds.x OPTIONS(model_type='sklearn', model_path='m.joblib', input_label_cols='y')",
            "CREATE MODEL ds.x: input_label_cols must be a list of column names, e.g. ['species']",
        ),
    ],
)
def test_evaluation_errors_name_what_to_do(con: SqlConnection, statement: str, message: str) -> None:
    with pytest.raises(SqlError) as raised:
        con.run_script(statement)
    assert str(raised.value) == f"statement 1: {message}"


def test_confusion_matrix_counts_match_scikit_learn(con: SqlConnection, weak_classifier: Path) -> None:
    con.run_script(
        f"CREATE MODEL ds.weak INPUT(sepal_length FLOAT64, sepal_width FLOAT64) "
        f"OPTIONS(model_type='sklearn', model_path='{weak_classifier}')"
    )
    table = con.fetch(
        con.run_script(
            "SELECT * FROM ML.CONFUSION_MATRIX(MODEL ds.weak, "
            "(SELECT sepal_length, sepal_width, target AS label FROM flowers)) ORDER BY expected_label"
        )
    )
    assert table is not None
    assert table.column_names == ["expected_label", "_0", "_1", "_2"]
    iris = load_iris()
    expected = metrics.confusion_matrix(iris.target, joblib.load(weak_classifier).predict(iris.data[:, :2]))
    assert [list(row.values()) for row in table.to_pylist()] == [[i, *expected[i]] for i in range(3)]


def test_confusion_matrix_names_text_labels_like_bigquery(con: SqlConnection, tmp_path: Path) -> None:
    iris = load_iris()
    names = np.array(["iris setosa", "versicolor", "virginica"])[iris.target]
    model = LogisticRegression(max_iter=300).fit(iris.data, names)
    joblib.dump(model, tmp_path / "named-1.joblib")
    con.run_script(
        f"CREATE MODEL ds.named OPTIONS(model_type='sklearn', model_path='{tmp_path}/named-*.joblib')"
    )
    table = con.fetch(
        con.run_script(
            "SELECT * FROM ML.CONFUSION_MATRIX(MODEL ds.named, (SELECT sepal_length, sepal_width, "
            "petal_length, petal_width, CASE target WHEN 0 THEN 'iris setosa' WHEN 1 THEN 'versicolor' "
            "ELSE 'virginica' END AS label FROM flowers))"
        )
    )
    assert table is not None
    assert table.column_names == ["expected_label", "iris_setosa", "versicolor", "virginica"]
    rows = {r["expected_label"]: r for r in table.to_pylist()}
    assert sum(rows[n][c] for n in rows for c in table.column_names[1:]) == 150
    assert rows["iris setosa"]["iris_setosa"] == 50


def test_a_confusion_matrix_of_a_regressor_is_refused(con: SqlConnection, tmp_path: Path) -> None:
    iris = load_iris()
    joblib.dump(LinearRegression().fit(iris.data[:, :3], iris.data[:, 3]), tmp_path / "reg-1.joblib")
    con.run_script(
        f"CREATE MODEL ds.reg INPUT(sepal_length FLOAT64, sepal_width FLOAT64, petal_length FLOAT64) "
        f"OPTIONS(model_type='sklearn', model_path='{tmp_path}/reg-*.joblib')"
    )
    with pytest.raises(SqlError) as raised:
        con.run_script(
            "SELECT * FROM ML.CONFUSION_MATRIX(MODEL ds.reg, (SELECT sepal_length, sepal_width, "
            "petal_length, petal_width AS label FROM flowers))"
        )
    assert str(raised.value) == (
        "statement 1: ML.CONFUSION_MATRIX(MODEL ds.reg): a confusion matrix needs a classifier "
        "(a model with classes)"
    )


@pytest.fixture
def virginica(con: SqlConnection, tmp_path: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """A binary classifier (virginica or not, from the sepals) registered as ds.virginica;
    the model, its features and its 0/1 truth."""
    iris = load_iris()
    x, y = iris.data[:, :2], (iris.target == 2).astype(int)
    model = LogisticRegression(max_iter=300).fit(x, y)
    joblib.dump(model, tmp_path / "virginica-1.joblib")
    con.run_script(
        f"CREATE MODEL ds.virginica INPUT(sepal_length FLOAT64, sepal_width FLOAT64) "
        f"OPTIONS(model_type='sklearn', model_path='{tmp_path}/virginica-*.joblib')"
    )
    return model, x, y


def test_roc_curve_of_a_binary_classifier_matches_scikit_learn(
    con: SqlConnection, virginica: tuple[Any, np.ndarray, np.ndarray]
) -> None:
    model, x, y = virginica
    table = con.fetch(
        con.run_script(
            "SELECT * FROM ML.ROC_CURVE(MODEL ds.virginica, (SELECT sepal_length, sepal_width, "
            "CASE WHEN target = 2 THEN 1 ELSE 0 END AS label FROM flowers)) ORDER BY threshold DESC"
        )
    )
    assert table is not None
    assert table.column_names == [
        "threshold",
        "recall",
        "false_positive_rate",
        "true_positives",
        "false_positives",
        "true_negatives",
        "false_negatives",
    ]
    rows = table.to_pylist()
    assert 2 < len(rows) <= 101
    score = model.predict_proba(x)[:, 1]
    for row in rows:
        called = score >= row["threshold"]
        assert row["true_positives"] == int(np.sum(called & (y == 1)))
        assert row["false_positives"] == int(np.sum(called & (y == 0)))
        assert row["true_positives"] + row["false_negatives"] == 50
        assert row["false_positives"] + row["true_negatives"] == 100
        assert row["recall"] == pytest.approx(row["true_positives"] / 50)
        assert row["false_positive_rate"] == pytest.approx(row["false_positives"] / 100)
    assert rows[-1]["recall"] == 1.0  # the lowest threshold calls everything positive
    # The curve's area is close to scikit-learn's AUC (trapezoids over up to 101 points).
    fpr = [0.0] + [r["false_positive_rate"] for r in rows]
    tpr = [0.0] + [r["recall"] for r in rows]
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc_score(y, score), abs=0.02)


def test_an_roc_curve_needs_two_classes_with_probabilities(con: SqlConnection) -> None:
    with pytest.raises(SqlError) as raised:
        con.run_script(
            "SELECT * FROM ML.ROC_CURVE(MODEL ds.iris_onnx, (SELECT sepal_length, sepal_width, "
            "petal_length, petal_width, target AS label FROM flowers))"
        )
    assert str(raised.value) == (
        "statement 1: ML.ROC_CURVE(MODEL ds.iris_onnx): an ROC curve needs a binary classifier; "
        "this model gives 3 classes"
    )


def test_ml_predict_threshold_moves_a_binary_classifiers_labels(con: SqlConnection, tmp_path: Path) -> None:
    iris = load_iris()
    x, y = iris.data[:, :2], np.where(iris.target == 2, "virginica", "other")
    model = LogisticRegression(max_iter=300).fit(x, y)
    joblib.dump(model, tmp_path / "named-1.joblib")
    con.run_script(
        f"CREATE MODEL ds.named INPUT(sepal_length FLOAT64, sepal_width FLOAT64) "
        f"OPTIONS(model_type='sklearn', model_path='{tmp_path}/named-*.joblib')"
    )
    probability = model.predict_proba(x)[:, 1]  # classes_ = [other, virginica]
    for threshold in (0.2, 0.5, 0.8):
        table = con.fetch(
            con.run_script(
                "SELECT predicted_label FROM ML.PREDICT(MODEL ds.named, (SELECT sepal_length, sepal_width, "
                f"id FROM flowers), STRUCT({threshold} AS threshold)) ORDER BY id"
            )
        )
        assert table is not None
        expected = np.where(probability >= threshold, "virginica", "other").tolist()
        assert table.column("predicted_label").to_pylist() == expected
        assert 0 < expected.count("virginica") < 150
    with pytest.raises(SqlError) as raised:
        con.run_script(
            f"SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT {', '.join(FEATURES)} FROM flowers), "
            "STRUCT(0.5 AS threshold))"
        )
    assert str(raised.value) == (
        "statement 1: ML.PREDICT(MODEL ds.iris): threshold applies to binary classifiers with "
        "probabilities; model ds.iris/1 does not give two class probabilities"
    )


def test_a_threshold_changes_what_evaluate_and_the_confusion_matrix_count(
    con: SqlConnection, virginica: tuple[Any, np.ndarray, np.ndarray]
) -> None:
    model, x, y = virginica
    rows = "(SELECT sepal_length, sepal_width, CASE WHEN target = 2 THEN 1 ELSE 0 END AS label FROM flowers)"
    probability = model.predict_proba(x)[:, 1]
    for threshold in (0.3, 0.7):
        called = (probability >= threshold).astype(int)
        got = _one_row(
            con,
            f"SELECT * FROM ML.EVALUATE(MODEL ds.virginica, {rows}, STRUCT({threshold} AS threshold))",
        )
        assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, called))
        # BigQuery: a binary classifier's precision, recall and f1 are its positive class's.
        assert got["precision"] == pytest.approx(metrics.precision_score(y, called))
        assert got["recall"] == pytest.approx(metrics.recall_score(y, called))
        assert got["f1_score"] == pytest.approx(metrics.f1_score(y, called))
        assert got["f1_score"] != pytest.approx(metrics.f1_score(y, called, average="macro"))
        assert got["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, probability))  # no threshold in it
        table = con.fetch(
            con.run_script(
                f"SELECT * FROM ML.CONFUSION_MATRIX(MODEL ds.virginica, {rows}, "
                f"STRUCT({threshold} AS threshold)) ORDER BY expected_label"
            )
        )
        assert table is not None
        expected = metrics.confusion_matrix(y, called)
        assert [list(r.values())[1:] for r in table.to_pylist()] == expected.tolist()


def test_roc_curve_at_the_thresholds_given_as_bigquery_generates_them(
    con: SqlConnection, virginica: tuple[Any, np.ndarray, np.ndarray]
) -> None:
    model, x, y = virginica
    rows = "(SELECT sepal_length, sepal_width, CASE WHEN target = 2 THEN 1 ELSE 0 END AS label FROM flowers)"
    table = con.fetch(
        con.run_script(
            f"SELECT * FROM ML.ROC_CURVE(MODEL ds.virginica, {rows}, GENERATE_ARRAY(0.4, 0.6, 0.01)) "
            "ORDER BY threshold"
        )
    )
    assert table is not None
    got = table.to_pylist()
    assert [r["threshold"] for r in got] == pytest.approx([0.4 + i / 100 for i in range(21)])
    score = model.predict_proba(x)[:, 1]
    for row in got:
        called = score >= row["threshold"]
        assert row["recall"] == pytest.approx(metrics.recall_score(y, called.astype(int)))
        assert row["false_positives"] == int(np.sum(called & (y == 0)))
    listed = con.fetch(
        con.run_script(f"SELECT threshold FROM ML.ROC_CURVE(MODEL ds.virginica, {rows}, [0.25, 0.75])")
    )
    assert listed is not None and listed.column("threshold").to_pylist() == [0.25, 0.75]


def test_only_rows_that_are_distributions_count_as_probabilities() -> None:
    from inferline.sql.evaluate import are_probabilities

    assert are_probabilities(np.array([[0.2, 0.8], [1.0, 0.0]]))
    assert are_probabilities(np.array([[0.2, 0.3, 0.5]], dtype=np.float32).astype(np.float64))
    assert not are_probabilities(np.array([[2.2, 1.1, -0.3]]))  # an SVC's decision scores
    assert not are_probabilities(np.array([[0.2, 0.2, 0.2]]))  # in [0, 1] but no distribution
    assert not are_probabilities(np.array([[1.5, -0.5]]))  # sums to 1, out of [0, 1]
    assert not are_probabilities(np.array([[np.nan, 1.0]]))
    assert not are_probabilities(np.array([0.2, 0.8]))
