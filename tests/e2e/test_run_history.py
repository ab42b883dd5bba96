"""Every `inferline run` leaves a row in its sink's run history, failed runs included (Beam runs:
test_run_beam.py records them beside the runs it already makes)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.conftest import CliRunner

# The history does not depend on the model's format: the ONNX iris model spares each run
# unpickling the .joblib, which imports scikit-learn (~1.5 s CPU a process).
ONNX = ["--set", "model.uri=examples/iris/models/iris-*.onnx"]


def _runs() -> list[tuple[object, ...]]:
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        return con.execute(
            "SELECT pipeline, model_ids, rows_read, rows_predicted, rows_dead, rows_per_second, seconds, "
            "status, error, output_table, ended_at >= started_at FROM inferline_runs ORDER BY started_at"
        ).fetchall()


def test_runs_into_duckdb_are_recorded_with_their_counts_and_failures(project: Path, cli: CliRunner) -> None:
    cli("run", "examples/iris/pipeline.yaml", *ONNX)
    cli("run", "examples/iris/pipeline.yaml", *ONNX, "--limit", "40")
    failed = cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=missing/*.joblib", check=False)
    assert failed.returncode == 1
    assert [line for line in failed.stderr.splitlines() if line.strip()] == [
        "error: model iris: no model file matches missing/*.joblib"
    ]
    first, second, third = _runs()
    assert first[:5] == ("iris-batch", ["iris/1"], 150, 150, 0)
    assert abs(first[5] - 150 / first[6]) < 1e-6 * first[5]
    assert first[7:] == ("ok", None, "iris_predictions", True)
    assert second[2:5] == (40, 40, 0) and second[7] == "ok"
    assert third[2] == 0 and third[7] == "error"
    assert third[8] == "model iris: no model file matches missing/*.joblib"


def test_dead_letters_count_in_the_history(project: Path, cli: CliRunner) -> None:
    csv_path = Path("examples/iris/data/iris.csv")
    lines = csv_path.read_text().splitlines()
    lines.insert(3, "1,2,3")
    csv_path.write_text("\n".join(lines) + "\n")
    cli("run", "examples/iris/pipeline.yaml", *ONNX)
    ((_, _, read, predicted, dead, *_),) = _runs()
    assert (read, predicted, dead) == (151, 150, 1)


def test_runs_into_files_append_to_a_jsonl_beside_the_output(project: Path, cli: CliRunner) -> None:
    sink = [*ONNX, "--set", "sink.kind=parquet", "--set", "sink.path=out/p.parquet"]
    cli("run", "examples/iris/pipeline.yaml", *sink)
    cli("run", "examples/iris/pipeline.yaml", *sink, "--set", "model.inputs=[nope]", check=False)
    first, second = [json.loads(line) for line in Path("out/inferline_runs.jsonl").read_text().splitlines()]
    assert (first["status"], first["rows_predicted"], first["output"]) == ("ok", 150, "out/p.parquet")
    assert first["model_ids"] == ["iris/1"] and first["output_table"] is None
    assert second["status"] == "error" and "'nope' not found" in second["error"]
    assert not Path("warehouse.duckdb").exists()
    result = cli("report", "out/p.parquet", "--label", "target", "-o", "out/report.html")
    assert "150 rows, 3 classes" in result.stdout
    assert 'id="chart-throughput"' in Path("out/report.html").read_text()
