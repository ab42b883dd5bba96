"""Bad input gives one clear line, a non-zero exit, and loses nothing already written."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from tests.conftest import CliRunner

# The ONNX model where the model is not the point: unpickling the .joblib imports scikit-learn,
# ~1.5 s CPU of each CLI process.
ONNX = "model.uri=examples/iris/models/iris-*.onnx"


def _spec(project: Path) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(Path("examples/iris/pipeline.yaml").read_text())


def _write(spec: dict, name: str = "p.yaml") -> str:  # type: ignore[type-arg]
    Path(name).write_text(yaml.safe_dump(spec))
    return name


def _one_line_error(result: object) -> str:
    stderr = result.stderr
    assert result.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    return str(lines[0])


def test_malformed_yaml_names_file_and_line(project: Path, cli: CliRunner) -> None:
    Path("bad.yaml").write_text("name: x\nsource: {kind: csv, path: [unclosed\n")
    line = _one_line_error(cli("run", "bad.yaml", check=False))
    assert "bad.yaml" in line and "malformed YAML" in line and "line" in line


def test_unknown_source_and_sink_kinds(project: Path, cli: CliRunner) -> None:
    spec = _spec(project)
    spec["source"]["kind"] = "xls"
    line = _one_line_error(cli("run", _write(spec), check=False))
    assert "source.kind" in line and "'xls'" in line and "csv" in line
    spec = _spec(project)
    spec["sink"]["kind"] = "oracle"
    line = _one_line_error(cli("run", _write(spec), check=False))
    assert "sink.kind" in line and "'oracle'" in line


def test_beam_only_kinds_on_the_local_engine_say_where_they_run(project: Path, cli: CliRunner) -> None:
    spec = _spec(project)
    spec["source"] = {"kind": "pubsub", "topic": "projects/p/topics/iris"}
    path = _write(spec)
    assert _one_line_error(cli("run", path, check=False)) == (
        f"error: {path}: source kind 'pubsub' runs under --runner beam (ReadFromPubSub); the local "
        "engine reads streams from kind: topic (Redis Streams or the embedded queue)"
    )
    spec = _spec(project)
    spec["sink"] = {"kind": "bigquery", "table": "p:d.t"}
    path = _write(spec)
    assert _one_line_error(cli("run", path, check=False)) == (
        f"error: {path}: sink kind 'bigquery' runs under --runner beam (WriteToBigQuery); on the local "
        "engine write kind: duckdb or parquet"
    )


def test_unknown_field_is_named(project: Path, cli: CliRunner) -> None:
    spec = _spec(project)
    spec["model"]["inptus"] = ["a"]
    line = _one_line_error(cli("run", _write(spec), check=False))
    assert "model.inptus: unknown field" in line


def test_non_numeric_value_is_dead_lettered_and_the_rest_predicted(project: Path, cli: CliRunner) -> None:
    csv_path = Path("examples/iris/data/iris.csv")
    lines = csv_path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = "abc"
    lines[5] = ",".join(cells)
    lines.insert(9, "1,2,3")  # too few columns: cannot be parsed
    lines.insert(20, "7,8")  # another one: each bad line is its own dead letter
    csv_path.write_text("\n".join(lines) + "\n")
    result = cli("run", "examples/iris/pipeline.yaml", "--set", ONNX)
    assert "149 predicted, 3 dead-lettered" in result.stdout
    with duckdb.connect("warehouse.duckdb") as con:
        dead = con.execute(
            "SELECT key, raw, error, stage FROM iris_predictions_errors ORDER BY stage"
        ).fetchall()
        ((count,),) = con.execute("SELECT count(*) FROM iris_predictions").fetchall()
    assert count == 149
    features, parse, other = dead
    assert features[0] == "4" and "'sepal_width'" in features[2] and "'abc' is not a number" in features[2]
    assert json.loads(features[1])["sepal_width"] == "abc"
    parse, other = sorted([parse, other], key=lambda d: d[1])
    assert parse[3] == "parse" and "expected 6 columns, got 3" in parse[2] and parse[1] == "1,2,3"
    assert other[1] == "7,8" and "expected 6 columns, got 2" in other[2] and other[0] != parse[0]
    assert "None" not in parse[0] + parse[2] + other[0] + other[2]


def test_missing_corrupt_and_unknown_model_files(project: Path, cli: CliRunner) -> None:
    line = _one_line_error(
        cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=nothing/*.joblib", check=False)
    )
    assert "model iris" in line and "no model file matches nothing/*.joblib" in line
    Path("broken-1.joblib").write_bytes(b"not a pickle at all")
    line = _one_line_error(
        cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=broken-1.joblib", check=False)
    )
    assert "broken-1.joblib" in line and "cannot load" in line
    Path("model.xyz").write_bytes(b"??")
    line = _one_line_error(
        cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=model.xyz", check=False)
    )
    assert "unknown model format '.xyz'" in line and "framework:" in line
    Path("broken-2.onnx").write_bytes(b"garbage")
    line = _one_line_error(
        cli("run", "examples/iris/pipeline.yaml", "--set", "model.uri=broken-2.onnx", check=False)
    )
    assert "broken-2.onnx" in line and "cannot load ONNX model" in line


def test_conflicting_table_schema_dead_letters_and_keeps_existing_rows(project: Path, cli: CliRunner) -> None:
    with duckdb.connect("warehouse.duckdb") as con:
        con.execute("CREATE TABLE iris_predictions (key VARCHAR PRIMARY KEY, prediction VARCHAR)")
        con.execute("INSERT INTO iris_predictions VALUES ('old', 'setosa')")
    # A column that changed type dead-letters the rows (issue 17) with the one-line reason.
    result = cli("run", "examples/iris/pipeline.yaml", "--set", ONNX)
    assert "150 rows read, 0 predicted, 150 dead-lettered" in result.stdout
    with duckdb.connect("warehouse.duckdb") as con:
        (error,) = con.execute("SELECT DISTINCT error FROM iris_predictions_errors").fetchone()
    assert "warehouse.duckdb table iris_predictions" in error and "--set sink.table" in error
    with duckdb.connect("warehouse.duckdb") as con:
        assert con.execute("SELECT * FROM iris_predictions").fetchall() == [("old", "setosa")]


def test_missing_input_column_is_named_and_the_previous_file_kept(project: Path, cli: CliRunner) -> None:
    # Any earlier Parquet output will do: the failed run must leave it byte for byte.
    pq.write_table(pa.table({"key": ["old"], "prediction": [0]}), "p.parquet")
    before = Path("p.parquet").read_bytes()
    result = cli(
        "run",
        "examples/iris/pipeline.yaml",
        "--set",
        "sink.kind=parquet",
        "--set",
        "sink.path=p.parquet",
        "--set",
        "model.inputs=[sepal_length, petal_size]",
        "--set",
        ONNX,
        check=False,
    )
    line = _one_line_error(result)
    assert "'petal_size' not found" in line and "model iris" in line
    assert Path("p.parquet").read_bytes() == before


def test_untrusted_pickle_is_refused(project: Path, cli: CliRunner) -> None:
    line = _one_line_error(
        cli(
            "run", "examples/iris/pipeline.yaml", check=False, env={"INFERLINE_TRUSTED_PATHS": "/nonexistent"}
        )
    )
    assert "untrusted location" in line and "INFERLINE_TRUSTED_PATHS" in line
    ok = cli("run", "examples/iris/pipeline.yaml", env={"INFERLINE_TRUSTED_PATHS": str(project / "examples")})
    assert "150 predicted" in ok.stdout


def test_missing_pipeline_file(project: Path, cli: CliRunner) -> None:
    line = _one_line_error(cli("run", "nope.yaml", check=False))
    assert "nope.yaml: pipeline file not found" in line


def test_debug_shows_the_traceback(project: Path, cli: CliRunner) -> None:
    result = cli("--debug", "run", "nope.yaml", check=False)
    assert "Traceback" in result.stderr and result.returncode == 1
