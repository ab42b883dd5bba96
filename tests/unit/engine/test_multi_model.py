"""`models:` with local models: per-model row isolation and one schema for the whole run."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import joblib
import numpy as np
import pytest
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


HOOK = """
class Margin:
    def postprocess(self, batch, outputs):
        return {"margin": outputs.scores.max(axis=1)}
"""


def _first_batch_fails(tmp_path: Path, *, handler: str | None = None) -> tuple[Path, DecisionTreeClassifier]:
    """sepal-1.joblib reads an unparseable sepal width in every row of the first batch of 10."""
    sepal = DecisionTreeClassifier(random_state=0).fit(IRIS.data[:, :2], IRIS.target)
    joblib.dump(sepal, tmp_path / "sepal-1.joblib")
    joblib.dump(
        DecisionTreeClassifier(random_state=0).fit(IRIS.data[:, 2:], IRIS.target), tmp_path / "petal-1.joblib"
    )
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *FEATURES])
        for i, row in enumerate(IRIS.data[:40]):
            writer.writerow([i, *["oops" if j == 1 and i < 10 else v for j, v in enumerate(row.tolist())]])
    sepal_spec: dict[str, object] = {
        "name": "sepal",
        "uri": str(tmp_path / "sepal-*.joblib"),
        "inputs": FEATURES[:2],
    }
    if handler:
        sepal_spec["handler"] = handler
    spec = parse_spec(
        {
            "source": {"kind": "csv", "path": str(tmp_path / "in.csv")},
            "models": [
                sepal_spec,
                {"name": "petal", "uri": str(tmp_path / "petal-*.joblib"), "inputs": FEATURES[2:]},
            ],
            "key": "id",
            "sink": {"kind": "parquet", "path": str(tmp_path / "out.parquet")},
            "batch": {"max_size": 10},
        }
    )
    summary = run_pipeline(spec, workers=1)
    assert (summary.rows_read, summary.rows_predicted, summary.rows_dead) == (40, 40, 10)
    return tmp_path / "out.parquet", sepal


def test_a_model_failing_on_the_whole_first_batch_still_gets_its_real_column_types(tmp_path: Path) -> None:
    # The first batch fixes the Parquet schema; the sepal model answered none of it, so its
    # types come from a probe: later batches' integer classes and scores are written as such.
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, sepal = _first_batch_fails(tmp_path)
    table = pq.read_table(out)
    assert table.schema.field("sepal_prediction").type == pa.int64()
    assert table.schema.field("sepal_scores").type == pa.list_(pa.float64())
    rows = sorted(table.to_pylist(), key=lambda r: int(r["key"]))
    assert all(r["sepal_prediction"] is None for r in rows[:10])
    assert [r["sepal_prediction"] for r in rows[10:]] == sepal.predict(IRIS.data[10:40, :2]).tolist()


def test_a_hook_column_that_appears_after_the_first_batch_is_dropped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pyarrow.parquet as pq

    (tmp_path / "margin_hook.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level("WARNING", logger="inferline.engine"):
        out, _ = _first_batch_fails(tmp_path, handler="margin_hook:Margin")
    rows = pq.read_table(out).to_pylist()
    assert "sepal_margin" not in rows[0] and rows[-1]["sepal_prediction"] is not None
    warnings = [r.getMessage() for r in caplog.records if "sepal_margin" in r.getMessage()]
    assert warnings == [
        "model sepal: column sepal_margin not written: it first appeared after the first batch fixed "
        "the columns"
    ]
