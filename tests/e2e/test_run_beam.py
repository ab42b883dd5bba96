"""`inferline run --runner beam`: the same pipeline on Apache Beam's DirectRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.conftest import CliRunner


def _parquet_run(cli: CliRunner, path: str, *extra: str) -> str:
    args = ["run", "examples/iris/pipeline.yaml", "--set", "sink.kind=parquet", "--set", f"sink.path={path}"]
    return cli(*args, *extra).stdout


def test_beam_writes_the_same_predictions_as_the_local_engine(project: Path, cli: CliRunner) -> None:
    # ONNX gives scores too; without key: the keys are `<file uri>:<row index>`.
    onnx = ("--set", "model.uri=examples/iris/models/iris-*.onnx", "--set", "key=")
    _parquet_run(cli, "out/local.parquet", *onnx)
    stdout = _parquet_run(cli, "out/beam.parquet", *onnx, "--runner", "beam", "--", "--direct_num_workers=1")
    assert "150 rows read, 150 predicted, 0 dead-lettered" in stdout
    assert "model: iris/1" in stdout
    local = pq.read_table("out/local.parquet").sort_by("key")
    beam = pq.read_table("out/beam.parquet").sort_by("key")
    assert local["key"][0].as_py() == str(project / "examples/iris/data/iris.csv") + ":0"
    assert beam.schema == local.schema
    assert beam.to_pylist() == local.to_pylist()
    assert len(beam["scores"][0]) == 3
    assert not [p.name for p in Path("out").iterdir() if p.name.startswith(".temp")]  # Beam's staging
    # Run history (beside the output) records the Beam run with its runner and counts.
    _, recorded = [json.loads(line) for line in Path("out/inferline_runs.jsonl").read_text().splitlines()]
    assert (recorded["runner"], recorded["status"], recorded["rows_read"], recorded["rows_predicted"]) == (
        "beam/DirectRunner",
        "ok",
        150,
        150,
    )
    assert recorded["model_ids"] == ["iris/1"]


def test_a_bad_row_lands_in_the_dead_letter_file(project: Path, cli: CliRunner) -> None:
    lines = Path("examples/iris/data/iris.csv").read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[1], "abc", 1)  # row id 1: sepal_length
    Path("bad.csv").write_text("\n".join(lines) + "\n")
    common = ("--set", "source.path=bad.csv", "--set", "sink.kind=jsonl")
    cli("run", "examples/iris/pipeline.yaml", *common, "--set", "sink.path=local.jsonl")
    stdout = cli(
        "run", "examples/iris/pipeline.yaml", *common, "--set", "sink.path=beam.jsonl", "--runner", "beam"
    ).stdout
    assert "150 rows read, 149 predicted, 1 dead-lettered" in stdout
    assert "dead letters: beam_errors.jsonl" in stdout
    (dead,) = [json.loads(line) for line in Path("beam_errors.jsonl").read_text().splitlines()]
    (local,) = [json.loads(line) for line in Path("local_errors.jsonl").read_text().splitlines()]
    assert dead["key"] == "1" and dead["stage"] == "features"
    assert dead["error"] == "field 'sepal_length': 'abc' is not a number"
    assert {k: dead[k] for k in ("key", "raw", "error", "stage", "model_id")} == {
        k: local[k] for k in ("key", "raw", "error", "stage", "model_id")
    }
    predicted = {json.loads(line)["key"] for line in Path("beam.jsonl").read_text().splitlines()}
    assert len(predicted) == 149 and "1" not in predicted


def test_a_duckdb_sink_is_refused_with_a_hint(project: Path, cli: CliRunner) -> None:
    result = cli("run", "examples/iris/pipeline.yaml", "--runner", "beam", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: examples/iris/pipeline.yaml: sink kind 'duckdb' writes a local file that Beam workers "
        "cannot share; under --runner beam use kind: parquet (then query it with DuckDB) or kind: bigquery"
    )


def test_runner_and_argument_errors(project: Path, cli: CliRunner) -> None:
    result = cli("run", "examples/iris/pipeline.yaml", "--runner", "spark", check=False)
    assert result.returncode == 1
    assert "error: --runner 'spark': expected local or beam" in result.stderr
    result = cli("run", "examples/iris/pipeline.yaml", "--", "--runner=DataflowRunner", check=False)
    assert result.returncode == 1
    assert (
        "error: unexpected arguments --runner=DataflowRunner; Beam options go after -- with --runner beam"
        in result.stderr
    )


def test_a_missing_key_column_is_one_line_and_recorded(project: Path, cli: CliRunner) -> None:
    result = _run_failing(cli, "--set", "key=nokey")
    assert result.count("\n") == 1
    assert result.startswith("error: ") and "iris.csv: key column 'nokey' not found (columns: id," in result
    # The failed run is in the history beside its output, with its runner and error.
    (failed,) = [json.loads(line) for line in Path("inferline_runs.jsonl").read_text().splitlines()]
    assert failed["runner"] == "beam/DirectRunner" and failed["status"] == "error"
    assert "key column 'nokey' not found" in failed["error"]


def _run_failing(cli: CliRunner, *extra: str) -> str:
    sink = ("--set", "sink.kind=parquet", "--set", "sink.path=x.parquet")
    result = cli("run", "examples/iris/pipeline.yaml", *sink, *extra, "--runner", "beam", check=False)
    assert result.returncode == 1
    return result.stderr


def test_digit_images_give_the_same_predictions_on_beam(
    project: Path, cli: CliRunner, digits_example: Path
) -> None:
    shutil.copytree(digits_example, project / "examples" / "digits")
    (project / "examples/digits/images/7_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    args = ["run", "examples/digits/pipeline.yaml", "--set", "sink.kind=parquet"]
    cli(*args, "--set", "sink.path=local.parquet")
    stdout = cli(*args, "--set", "sink.path=beam.parquet", "--runner", "beam").stdout
    assert "361 rows read, 360 predicted, 1 dead-lettered" in stdout
    local = pq.read_table("local.parquet").sort_by("key")
    beam = pq.read_table("beam.parquet").sort_by("key")
    assert (
        beam.column_names
        == local.column_names
        == ["key", "uri", "width", "height", "prediction", "scores", "model_id"]
    )
    assert beam.num_rows == 360
    for name in ("key", "uri", "width", "height", "prediction", "model_id"):
        assert beam[name].to_pylist() == local[name].to_pylist(), name
    assert np.allclose(np.array(beam["scores"].to_pylist()), np.array(local["scores"].to_pylist()))
    (dead,) = [json.loads(line) for line in Path("beam_errors.jsonl").read_text().splitlines()]
    (local_dead,) = [json.loads(line) for line in Path("local_errors.jsonl").read_text().splitlines()]
    assert {k: dead[k] for k in ("key", "raw", "stage")} == {
        k: local_dead[k] for k in ("key", "raw", "stage")
    }
    assert dead["stage"] == "decode" and dead["error"].startswith(dead["key"] + ": cannot decode image")
