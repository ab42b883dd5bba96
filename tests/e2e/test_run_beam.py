"""`inferline run --runner beam`: the same pipeline on Apache Beam's DirectRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from inferline.engine.local import run_pipeline
from inferline.engine.run_summary import RunSummary
from inferline.pipeline import load_spec
from tests.conftest import CliRunner


def _local(spec: str, *overrides: str) -> RunSummary:
    """The same spec on the local engine, in this process: the reference Beam is compared with
    (the CLI's local path has its own tests; a CLI process here would cost ~3 s CPU more)."""
    return run_pipeline(load_spec(spec, overrides=list(overrides)))


def test_beam_writes_the_local_engines_rows_and_dead_letters(project: Path, cli: CliRunner) -> None:
    # One Beam run for both: predictions equal to the local engine's, and a bad value (row 1's
    # sepal_length) dead-lettered as locally. ONNX gives scores too; without key: the keys are
    # `<file uri>:<row index>`.
    lines = Path("examples/iris/data/iris.csv").read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[1], "abc", 1)
    Path("bad.csv").write_text("\n".join(lines) + "\n")
    common = [
        "source.path=bad.csv",
        "model.uri=examples/iris/models/iris-*.onnx",
        "key=",
        "sink.kind=parquet",
    ]
    local = _local("examples/iris/pipeline.yaml", *common, "sink.path=out/local.parquet")
    assert (local.rows_read, local.rows_predicted, local.rows_dead) == (150, 149, 1)
    args = [a for setting in common for a in ("--set", setting)]
    stdout = cli(
        "run", "examples/iris/pipeline.yaml", *args, "--set", "sink.path=out/beam.parquet",
        "--runner", "beam", "--", "--direct_num_workers=1",
    ).stdout  # fmt: skip
    assert "150 rows read, 149 predicted, 1 dead-lettered" in stdout
    assert "model: iris/1" in stdout
    assert "dead letters: out/beam_errors.jsonl" in stdout
    want = pq.read_table("out/local.parquet").sort_by("key")
    got = pq.read_table("out/beam.parquet").sort_by("key")
    bad_key = str(project / "bad.csv") + ":1"
    assert want["key"][0].as_py() == str(project / "bad.csv") + ":0"
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert got.num_rows == 149 and bad_key not in got["key"].to_pylist()
    assert len(got["scores"][0]) == 3
    (dead,) = [json.loads(line) for line in Path("out/beam_errors.jsonl").read_text().splitlines()]
    (local_dead,) = [json.loads(line) for line in Path("out/local_errors.jsonl").read_text().splitlines()]
    assert dead["key"] == bad_key and dead["stage"] == "features"
    assert dead["error"] == "field 'sepal_length': 'abc' is not a number"
    assert {k: dead[k] for k in ("key", "raw", "error", "stage", "model_id")} == {
        k: local_dead[k] for k in ("key", "raw", "error", "stage", "model_id")
    }
    assert not [p.name for p in Path("out").iterdir() if p.name.startswith(".temp")]  # Beam's staging
    # Run history (beside the output) records the Beam run with its runner and counts.
    (recorded,) = [json.loads(line) for line in Path("out/inferline_runs.jsonl").read_text().splitlines()]
    assert (recorded["runner"], recorded["status"], recorded["rows_read"], recorded["rows_predicted"]) == (
        "beam/DirectRunner",
        "ok",
        150,
        149,
    )
    assert recorded["model_ids"] == ["iris/1"]


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
    spec = "examples/digits/pipeline.yaml"
    assert _local(spec, "sink.kind=parquet", "sink.path=local.parquet").rows_dead == 1
    args = ["run", spec, "--set", "sink.kind=parquet", "--set", "sink.path=beam.parquet", "--runner", "beam"]
    stdout = cli(*args).stdout
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
