"""sql/training/evaluation.py: ML.EVALUATE(MODEL m) without input gives the row worked out at
training, equal to ML.EVALUATE over the same evaluation rows given as input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

import inferline.sql
from inferline.sql import SqlConnection
from inferline.sql.evaluate import classification_metrics, evaluation_table, metrics_table
from inferline.sql.training.data import split_rows
from inferline.sql.training.evaluation import Predictions, metrics
from inferline.sql.training.options import TrainOptions

ROWS = 300
SPLIT = "input_label_cols=['{}'], data_split_method='{}'"
MODELS = {  # name: (options, the query's columns)
    "ds.linear": ("model_type='linear_reg', " + SPLIT.format("y", "NO_SPLIT"), "x, z, colour, y"),
    "ds.binary": ("model_type='logistic_reg', " + SPLIT.format("big", "RANDOM"), "x, z, colour, big"),
    "ds.classes": ("model_type='logistic_reg', " + SPLIT.format("colour", "NO_SPLIT"), "x, z, colour"),
    "ds.trees": (
        "model_type='boosted_tree_classifier', max_iterations=3, early_stop=FALSE, "
        + SPLIT.format("big", "RANDOM"),
        "x, z, colour, big",
    ),
}


def _row(con: SqlConnection, query: str) -> dict[str, object]:
    relation = con.sql(query)
    assert relation is not None
    [row] = relation.to_arrow_table().to_pylist()
    return row


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlConnection]:
    connection = inferline.sql.connect(store=str(Path(tmp_path_factory.mktemp("store"))))
    rng = np.random.default_rng(5)
    x = rng.normal(size=ROWS)
    colour = rng.choice(np.array(["red", "blue", "green"]), ROWS)
    y = 2.0 * x + np.where(colour == "red", 1.5, 0.0) + rng.normal(0, 0.5, ROWS)
    table = pa.table({"id": np.arange(ROWS), "x": x, "z": rng.normal(size=ROWS), "colour": colour, "y": y,
                      "big": np.where(y + rng.normal(0, 1, ROWS) > 0.5, "yes", "no")})  # fmt: skip
    connection.raw.register("generated", table)
    connection.raw.execute("CREATE TABLE rows AS SELECT * FROM generated")
    for name, (options, columns) in MODELS.items():
        connection.sql(f"CREATE MODEL {name} OPTIONS({options}) AS SELECT {columns} FROM rows ORDER BY id")
    try:
        yield connection
    finally:
        connection.close()


@pytest.mark.parametrize("name", list(MODELS))
def test_stored_evaluation_equals_evaluating_the_same_rows(con: SqlConnection, name: str) -> None:
    options, columns = MODELS[name]
    stored = _row(con, f"SELECT * FROM ML.EVALUATE(MODEL {name})")
    held = np.ones(ROWS, dtype=bool)
    if "RANDOM" in options:
        held = split_rows(ROWS, TrainOptions("logistic_reg", "big", split="RANDOM"))
        assert 0 < held.sum() < ROWS
    ids = ", ".join(str(i) for i in np.flatnonzero(held))
    given = _row(
        con, f"SELECT * FROM ML.EVALUATE(MODEL {name}, (SELECT {columns} FROM rows WHERE id IN ({ids})))"
    )
    assert list(stored) == list(given)
    for column, value in given.items():
        expected = None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)
        assert stored[column] == expected, column


def test_a_supervised_model_keeps_one_row_not_its_evaluation_rows(con: SqlConnection) -> None:
    def tables() -> set[str]:
        return {r[0] for r in con.raw.execute("SELECT table_name FROM information_schema.tables").fetchall()}

    assert metrics_table("ds.linear") in tables() and evaluation_table("ds.linear") not in tables()
    con.sql(
        "CREATE OR REPLACE MODEL ds.swap OPTIONS(model_type='kmeans', num_clusters=2) "
        "AS SELECT x, z FROM rows"
    )
    assert evaluation_table("ds.swap") in tables()
    con.sql(
        "CREATE OR REPLACE MODEL ds.swap OPTIONS(model_type='linear_reg', input_label_cols=['y']) "
        "AS SELECT x, y FROM rows"
    )
    assert metrics_table("ds.swap") in tables() and evaluation_table("ds.swap") not in tables()
    con.sql("DROP MODEL ds.swap")
    assert metrics_table("ds.swap") not in tables()


@pytest.mark.parametrize("labels", [["a", "b", "b", "a", "b"], ["a", "b", "c", "a", "b"], [0, 1, 1, 0, 2]])
def test_metrics_equal_counting_row_by_row(labels: list[object]) -> None:
    # The last two: held-out labels the model never saw (class "c", 2).
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    trained = [labels[0], labels[1], labels[1], labels[0], labels[1]]
    model = LogisticRegression().fit(x, trained)
    y = np.asarray(labels, dtype=object if isinstance(labels[0], str) else np.int64)
    got = metrics(Predictions(model), x, y, classifier=True)
    expected = classification_metrics(
        y.tolist(), model.predict(x).tolist(), model.predict_proba(x), list(model.classes_)
    )
    assert got == pytest.approx(expected)
