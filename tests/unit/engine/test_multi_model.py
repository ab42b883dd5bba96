"""`models:` with local models: per-model row isolation and one schema for the whole run."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from inferline.engine.local import run_pipeline
from inferline.examples.iris import FEATURES
from inferline.pipeline import parse_spec

IRIS = load_iris()


def test_a_model_failing_on_rows_loses_only_its_own_answers(tmp_path: Path) -> None:
    petals = FEATURES[2:]
    sepal = DecisionTreeClassifier(random_state=0).fit(IRIS.data[:, :2], IRIS.target)
    petal = DecisionTreeClassifier(random_state=0).fit(IRIS.data[:, 2:], IRIS.target)
    joblib.dump(sepal, tmp_path / "sepal.joblib")
    joblib.dump(petal, tmp_path / "petal.joblib")
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *FEATURES])
        for i, row in enumerate(IRIS.data[:40]):
            # Row 5, the whole second batch and row 25 have a bad sepal width: only `sepal` fails there.
            broken = i == 5 or 10 <= i < 20 or i == 25
            values = ["oops" if j == 1 and broken else v for j, v in enumerate(row.tolist())]
            writer.writerow([i, *values])
    spec = parse_spec(
        {
            "source": {"kind": "csv", "path": str(tmp_path / "in.csv")},
            "models": [
                {"name": "sepal", "uri": str(tmp_path / "sepal.joblib"), "inputs": FEATURES[:2]},
                {"name": "petal", "uri": str(tmp_path / "petal.joblib"), "inputs": petals},
            ],
            "key": "id",
            "sink": {"kind": "duckdb", "path": str(tmp_path / "out.duckdb"), "table": "answers"},
            "batch": {"max_size": 10},
        }
    )
    summary = run_pipeline(spec, workers=1)
    assert summary.rows_read == 40
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT * FROM answers ORDER BY id").to_arrow_table().to_pylist()
        dead = con.sql("SELECT key, model_id, stage FROM answers_errors ORDER BY CAST(key AS INT)").fetchall()
    assert len(rows) == 40
    assert [r["petal_prediction"] for r in rows] == petal.predict(IRIS.data[:40, 2:]).tolist()
    bad = [5, *range(10, 20), 25]
    good = [i for i in range(40) if i not in bad]
    assert [i for i, r in enumerate(rows) if r["sepal_prediction"] is None] == bad
    assert [rows[i]["sepal_prediction"] for i in good] == sepal.predict(IRIS.data[good, :2]).tolist()
    np.testing.assert_allclose(
        [rows[i]["sepal_scores"] for i in good], sepal.predict_proba(IRIS.data[good, :2])
    )
    assert all(rows[i]["sepal_scores"] is None and rows[i]["sepal_model_id"] is None for i in bad)
    assert {r["petal_model_id"] for r in rows} == {"petal/petal"}
    assert dead == [(str(i), "sepal/sepal", "features") for i in bad]
