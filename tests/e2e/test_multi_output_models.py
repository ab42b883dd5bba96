"""Models with several outputs that are not classifiers: one column per output, by name
(issue 18): a two-output ONNX graph in a pipeline and in SQL, a two-output SavedModel in SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pytest

import inferline.sql
from inferline.models.store import ModelStore
from tests.conftest import CliRunner
from tests.e2e.server import running_server
from tests.onnx_models import two_output_graph

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROWS = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0], [2.0, 0.0, -2.0], [3.5, 1.5, 0.25]])


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("multi-output")
    two_output_graph(root / "multi-1.onnx")
    session = ort.InferenceSession(str(root / "multi-1.onnx"), providers=["CPUExecutionProvider"])
    total, doubled = session.run(None, {"x": ROWS.astype(np.float32)})
    with open(root / "rows.csv", "w") as handle:
        handle.write("id,a,b,c\n")
        handle.writelines(f"{i},{a},{b},{c}\n" for i, (a, b, c) in enumerate(ROWS))
    return root, {"total": total, "doubled": doubled}


SPEC = """
name: multi
source: {{kind: csv, path: {root}/rows.csv}}
key: id
model: {{name: multi, uri: {root}/multi-*.onnx, inputs: [a, b, c]}}
sink: {{kind: duckdb, path: out.duckdb, table: multi}}
"""


def test_pipeline_writes_one_column_per_onnx_output(
    graph: tuple[Path, dict[str, np.ndarray]], project: Path, cli: CliRunner
) -> None:
    root, want = graph
    (project / "multi.yaml").write_text(SPEC.format(root=root))
    result = cli("run", "multi.yaml")
    assert "4 rows read, 4 predicted, 0 dead-lettered" in result.stdout
    with duckdb.connect(str(project / "out.duckdb")) as con:
        columns = [row[0] for row in con.execute("DESCRIBE multi").fetchall()]
        rows = con.execute("SELECT total, doubled FROM multi ORDER BY CAST(key AS INT)").fetchall()
    assert "prediction" not in columns and "scores" not in columns
    assert columns[-3:] == ["total", "doubled", "model_id"]
    np.testing.assert_allclose([r[0] for r in rows], want["total"], rtol=1e-6)
    np.testing.assert_allclose([r[1] for r in rows], want["doubled"], rtol=1e-6)


def test_sql_predict_names_each_output(graph: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, want = graph
    with inferline.sql.connect() as con:
        con.run_script(
            f"CREATE TABLE t AS SELECT * FROM read_csv('{root}/rows.csv');"
            f"CREATE MODEL ds.multi OPTIONS(model_type='onnx', model_path='{root}/multi-*.onnx');"
            f"CREATE MODEL ds.named OUTPUT(s FLOAT64, v ARRAY<FLOAT64>) "
            f"OPTIONS(model_type='onnx', model_path='{root}/multi-*.onnx');"
        )
        own = con.sql("SELECT * FROM ML.PREDICT(MODEL ds.multi, (SELECT a, b, c FROM t)) ORDER BY a")
        named = con.sql("SELECT s, v FROM ML.PREDICT(MODEL ds.named, (SELECT a, b, c FROM t)) ORDER BY a")
        own_columns, own_rows, named_rows = own.columns, own.fetchall(), named.fetchall()
    assert own_columns == ["total", "doubled", "a", "b", "c"]
    order = np.argsort(ROWS[:, 0])
    np.testing.assert_allclose([r[0] for r in own_rows], want["total"][order], rtol=1e-6)
    np.testing.assert_allclose([r[1] for r in own_rows], want["doubled"][order], rtol=1e-6)
    assert named_rows == [(r[0], r[1]) for r in own_rows]  # OUTPUT(...) renames them in order


def test_server_answers_each_output(graph: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    root, want = graph
    store = tmp_path / "store"
    ModelStore(str(store)).add("multi", str(root / "multi-1.onnx"))
    with running_server(store) as base:
        answer = httpx.post(f"{base}/predictions/multi", json={"instances": ROWS.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text
        instances = answer.json()["predictions"]
        v2 = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 3], "data": ROWS.ravel().tolist()}]
        }
        tensors = httpx.post(f"{base}/v2/models/multi/infer", json=v2, timeout=60)
        assert tensors.status_code == 200, tensors.text
        metadata = httpx.get(f"{base}/v2/models/multi", timeout=60).json()
    assert [sorted(i) for i in instances] == [["doubled", "total"]] * len(ROWS)  # a field per output
    np.testing.assert_allclose([i["total"] for i in instances], want["total"], rtol=1e-6)
    np.testing.assert_allclose([i["doubled"] for i in instances], want["doubled"], rtol=1e-6)
    outputs = {o["name"]: o for o in tensors.json()["outputs"]}
    assert sorted(outputs) == ["doubled", "total"]  # one v2 output tensor per output
    assert outputs["doubled"]["shape"] == [4, 3]
    np.testing.assert_allclose(outputs["total"]["data"], want["total"], rtol=1e-6)
    np.testing.assert_allclose(outputs["doubled"]["data"], want["doubled"].ravel(), rtol=1e-6)
    assert sorted(o["name"] for o in metadata["outputs"]) == ["doubled", "total"]


def test_sql_predict_gives_each_saved_model_signature_output(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")

    class TwoOutputs(tf.Module):  # type: ignore[misc]
        """features (n, 2) -> score (n, 1) and embedding (n, 3): not a classifier."""

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="features")])
        def serve(self, features: Any) -> dict[str, Any]:
            score = tf.reduce_sum(features * [[3.0, -1.0]], axis=1, keepdims=True)
            embedding = tf.concat([features, features[:, :1] - features[:, 1:]], axis=1)
            return {"score": score, "embedding": embedding}

    module = TwoOutputs()
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"serving_default": module.serve})
    features = ROWS[:, :2].astype(np.float32)
    served = tf.saved_model.load(str(tmp_path / "two")).signatures["serving_default"]
    want = {name: np.asarray(value) for name, value in served(features=tf.constant(features)).items()}
    with inferline.sql.connect() as con:
        con.run_script(
            f"CREATE MODEL ds.two OPTIONS(model_type='tensorflow', model_path='{tmp_path}/two');"
            # a value then an array would declare a classifier; naming the model's outputs does not
            "CREATE MODEL ds.named OUTPUT(score FLOAT64, embedding ARRAY<FLOAT64>) "
            f"OPTIONS(model_type='tensorflow', model_path='{tmp_path}/two');"
        )
        values = f"(SELECT * FROM (VALUES {', '.join(str(tuple(r)) for r in features.tolist())}) t(x, y))"
        relation = con.sql(f"SELECT * FROM ML.PREDICT(MODEL ds.two, {values})")
        columns, rows = relation.columns, relation.fetchall()
        named = con.sql(f"SELECT * FROM ML.PREDICT(MODEL ds.named, {values})")
        named_columns, named_rows = named.columns, named.fetchall()
    assert columns == ["embedding", "score", "x", "y"]  # sorted by name
    np.testing.assert_allclose([r[1] for r in rows], want["score"][:, 0], rtol=1e-6)
    np.testing.assert_allclose([r[0] for r in rows], want["embedding"], rtol=1e-6)
    assert named_columns == ["score", "embedding", "x", "y"]
    assert [(r[1], r[0]) for r in rows] == [(r[0], r[1]) for r in named_rows]
