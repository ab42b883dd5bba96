"""An ONNX model exported one input per column (text too): pipeline, SQL and server."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score

import inferline.sql
from inferline.models.store import ModelStore
from tests.conftest import CliRunner
from tests.e2e.server import running_server
from tests.onnx_models import FEATURES, iris_frame, per_column_pipeline

pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, Path, object]:
    root = tmp_path_factory.mktemp("onnx-inputs")
    with_text = per_column_pipeline(root / "garden-1.onnx", with_text=True)
    numbers = per_column_pipeline(root / "iris-1.onnx", with_text=False)
    frame = iris_frame()
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(root / "flowers.csv", index=False)
    return root, with_text, root / "flowers.csv", numbers


SPEC = """
name: garden
source: {{kind: csv, path: {csv}}}
key: id
model: {{name: garden, uri: {root}/garden-*.onnx}}
sink: {{kind: duckdb, path: out.duckdb, table: garden}}
"""


def test_pipeline_feeds_each_input_its_column(
    exported: tuple[Path, object, Path, object], project: Path, cli: CliRunner
) -> None:
    root, model, csv_path, _ = exported
    (project / "garden.yaml").write_text(SPEC.format(csv=csv_path, root=root))
    result = cli("run", "garden.yaml")
    assert "150 rows read, 150 predicted, 0 dead-lettered" in result.stdout
    with duckdb.connect(str(project / "out.duckdb")) as con:
        rows = con.execute("SELECT garden, scores FROM garden ORDER BY CAST(key AS INT)").fetchall()
    frame = iris_frame()
    assert [r[0] for r in rows] == frame["garden"].tolist()  # the text column passes through
    want = model.predict_proba(frame[[*FEATURES, "garden"]])  # type: ignore[attr-defined]
    np.testing.assert_allclose([r[1] for r in rows], want, atol=1e-5)


def test_sql_predict_and_evaluate_match_inputs_by_column_name(
    exported: tuple[Path, object, Path, object],
) -> None:
    root, model, csv_path, _ = exported
    frame = iris_frame()
    with inferline.sql.connect() as con:
        con.run_script(
            f"CREATE TABLE flowers AS SELECT * FROM read_csv('{csv_path}');"
            f"CREATE MODEL ds.garden OPTIONS(model_type='onnx', model_path='{root}/garden-*.onnx', "
            "input_label_cols=['species']);"
        )
        predicted = con.sql(
            "SELECT id, label, probabilities "
            "FROM ML.PREDICT(MODEL ds.garden, (SELECT * FROM flowers)) ORDER BY id"
        ).fetchall()
        ((accuracy,),) = con.sql(
            "SELECT accuracy FROM ML.EVALUATE(MODEL ds.garden, TABLE flowers)"
        ).fetchall()
    want = model.predict_proba(frame[[*FEATURES, "garden"]])  # type: ignore[attr-defined]
    np.testing.assert_allclose([r[2] for r in predicted], want, atol=1e-5)
    assert [r[1] for r in predicted] == want.argmax(axis=1).tolist()
    assert accuracy == pytest.approx(accuracy_score(frame["species"], want.argmax(axis=1)))


def test_server_takes_named_fields_and_v2_per_input_tensors(
    exported: tuple[Path, object, Path, object], tmp_path: Path
) -> None:
    root, _, _, numbers = exported
    store = tmp_path / "store"
    ModelStore(str(store)).add("iris", str(root / "iris-1.onnx"))
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    frame = iris_frame().iloc[:0].reindex(range(2))
    frame[FEATURES] = rows
    want = numbers.predict(frame[FEATURES]).tolist()  # type: ignore[attr-defined]
    with running_server(store) as base:
        instances = [dict(zip(FEATURES, r, strict=True)) for r in rows]
        answer = httpx.post(f"{base}/predictions/iris", json={"instances": instances})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == want
        v2 = {
            "inputs": [
                {"name": f, "datatype": "FP64", "shape": [2], "data": [r[i] for r in rows]}
                for i, f in enumerate(FEATURES)
            ]
        }
        answer = httpx.post(f"{base}/v2/models/iris/infer", json=v2)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == want
