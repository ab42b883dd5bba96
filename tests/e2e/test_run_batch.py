"""`inferline run` over files, end to end, as a user runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import joblib
import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import yaml

from inferline.examples.iris import FEATURES
from tests.conftest import CliRunner


def _iris_rows(project: Path) -> list[dict[str, str]]:
    with open(project / "examples/iris/data/iris.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _expected(project: Path, rows: list[dict[str, str]]) -> dict[str, int]:
    model = joblib.load(project / "examples/iris/models/iris-1.joblib")
    matrix = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    return {r["id"]: int(p) for r, p in zip(rows, model.predict(matrix), strict=True)}


# Tests about sources and sinks run the ONNX model: unpickling the .joblib imports scikit-learn,
# ~1.5 s CPU of each CLI process.
ONNX = "model.uri=examples/iris/models/iris-*.onnx"


def _expected_onnx(project: Path, rows: list[dict[str, str]]) -> dict[str, int]:
    session = ort.InferenceSession(str(project / "examples/iris/models/iris-1.onnx"))
    matrix = np.array([[float(r[f]) for f in FEATURES] for r in rows], dtype=np.float32)
    labels = session.run(None, {"input": matrix})[0]
    return {r["id"]: int(p) for r, p in zip(rows, labels, strict=True)}


def test_quickstart_pipeline_predicts_every_row_like_the_model_and_a_rerun_adds_none(
    project: Path, cli: CliRunner
) -> None:
    result = cli("run", "examples/iris/pipeline.yaml")
    assert "150 rows read, 150 predicted, 0 dead-lettered" in result.stdout
    assert "model: iris/1" in result.stdout
    with duckdb.connect("warehouse.duckdb") as con:
        got = dict(con.execute("SELECT key, prediction FROM iris_predictions").fetchall())
        ids = {r[0] for r in con.execute("SELECT DISTINCT model_id FROM iris_predictions").fetchall()}
    assert got == _expected(project, _iris_rows(project))
    assert ids == {"iris/1"}
    # A rerun into the same table does not duplicate rows.
    cli("run", "examples/iris/pipeline.yaml")
    with duckdb.connect("warehouse.duckdb") as con:
        ((count,),) = con.execute("SELECT count(*) FROM iris_predictions").fetchall()
    assert count == 150


def test_file_sinks_hold_the_same_predictions(project: Path, cli: CliRunner) -> None:
    expected = _expected_onnx(project, _iris_rows(project))

    def run_into(kind: str) -> Path:
        path = f"out/p.{kind}"
        cli(
            "run",
            "examples/iris/pipeline.yaml",
            "--set",
            ONNX,
            "--set",
            f"sink.kind={kind}",
            "--set",
            f"sink.path={path}",
        )
        return Path(path)

    table = pq.read_table(run_into("parquet"))
    assert dict(zip(table["key"].to_pylist(), table["prediction"].to_pylist(), strict=True)) == expected

    lines = [json.loads(line) for line in run_into("jsonl").read_text().splitlines()]
    assert {r["key"]: r["prediction"] for r in lines} == expected
    assert lines[0]["sepal_length"] == float(_iris_rows(project)[0]["sepal_length"])

    with run_into("csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["key"]: int(r["prediction"]) for r in rows} == expected


def test_onnx_model_matches_onnxruntime(project: Path, cli: CliRunner) -> None:
    cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=examples/iris/models/iris-*.onnx")
    rows = _iris_rows(project)
    session = ort.InferenceSession("examples/iris/models/iris-1.onnx")
    matrix = np.array([[float(r[f]) for f in FEATURES] for r in rows], dtype=np.float32)
    labels, scores = session.run(None, {"input": matrix})
    with duckdb.connect("warehouse.duckdb") as con:
        got = {
            k: (p, s)
            for k, p, s in con.execute("SELECT key, prediction, scores FROM iris_predictions").fetchall()
        }
    for row, label, score in zip(rows, labels, scores, strict=True):
        prediction, stored_scores = got[row["id"]]
        assert prediction == int(label)
        np.testing.assert_allclose(stored_scores, score, rtol=1e-6)


def test_framework_override_loads_a_joblib_file_with_an_odd_name_and_limit_stops_after_n_rows(
    project: Path, cli: CliRunner
) -> None:
    Path("model.pkl2").write_bytes(Path("examples/iris/models/iris-1.joblib").read_bytes())
    result = cli(
        "run",
        "examples/iris/pipeline.yaml",
        "--set",
        "model.uri=model.pkl2",
        "--set",
        "model.framework=sklearn",
        "--limit",
        "20",
    )
    assert "20 rows read, 20 predicted" in result.stdout


def test_skops_model_loads_safely(project: Path, cli: CliRunner) -> None:
    import skops.io as sio

    model = joblib.load("examples/iris/models/iris-1.joblib")
    sio.dump(model, "iris-7.skops")
    result = cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=iris-*.skops")
    assert "model: iris/7" in result.stdout


def test_jsonl_and_parquet_sources_with_a_list_column(project: Path, cli: CliRunner) -> None:
    rows = _iris_rows(project)
    with open("flowers.jsonl", "w") as handle:
        for r in rows:
            handle.write(json.dumps({"id": int(r["id"]), "feature": [float(r[f]) for f in FEATURES]}) + "\n")
    spec = yaml.safe_load(Path("examples/iris/pipeline.yaml").read_text())
    spec["source"] = {"kind": "jsonl", "path": "flowers.jsonl"}
    spec["model"]["inputs"] = "feature"
    spec["model"]["uri"] = "examples/iris/models/iris-*.onnx"
    spec["sink"] = {"kind": "parquet", "path": "from_jsonl.parquet"}
    Path("jsonl.yaml").write_text(yaml.safe_dump(spec))
    cli("run", "jsonl.yaml")
    table = pq.read_table("from_jsonl.parquet")
    expected = _expected_onnx(project, rows)
    assert {
        str(k): p for k, p in zip(table["key"].to_pylist(), table["prediction"].to_pylist(), strict=True)
    } == expected

    spec["source"] = {"kind": "parquet", "path": "from_jsonl.parquet"}
    spec["sink"] = {"kind": "jsonl", "path": "again.jsonl"}
    spec["keep"] = ["feature"]
    Path("parquet.yaml").write_text(yaml.safe_dump(spec))
    cli("run", "parquet.yaml")
    again = [json.loads(line) for line in Path("again.jsonl").read_text().splitlines()]
    assert {r["key"]: r["prediction"] for r in again} == expected
    assert set(again[0]) == {"key", "feature", "prediction", "scores", "model_id"}  # ONNX gives scores
