"""Nothing a user types replaces a file that is not the output's own kind (issue 15)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import CliRunner

# The ONNX iris model: what these runs check does not depend on the model, and unpickling the
# .joblib imports scikit-learn (~1.5 s CPU a process).
ONNX = ("--set", "model.uri=examples/iris/models/iris-*.onnx")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_parquet_sink_without_a_path_leaves_the_warehouse_alone(project: Path, cli: CliRunner) -> None:
    cli("run", "examples/iris/pipeline.yaml", *ONNX)
    result = cli("run", "examples/iris/pipeline.yaml", *ONNX, "--set", "sink.kind=parquet", check=False)
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [
        "error: warehouse.duckdb is a DuckDB database, not Parquet output; refusing to replace it: "
        "pass --set sink.path=warehouse.parquet (or remove the file)"
    ]
    assert Path("warehouse.duckdb").read_bytes()[8:12] == b"DUCK"
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT key) FROM iris_predictions").fetchall() == [(150,)]
        assert con.execute("SELECT status FROM inferline_runs").fetchall() == [("ok",)]
    assert not Path("warehouse.parquet").exists()


def test_file_sinks_refuse_other_kinds_of_files_and_the_runs_own_input(project: Path, cli: CliRunner) -> None:
    pq.write_table(pa.table({"key": ["a", "b"]}), "scores.jsonl")  # a Parquet file, badly named
    Path("out").write_text('{"key": "a", "prediction": 1}\n')  # JSON Lines, no extension
    names = ("scores.jsonl", "out", "examples/iris/data/iris.csv")
    before = {name: Path(name).read_bytes() for name in names}
    run = ("run", "examples/iris/pipeline.yaml", *ONNX)
    jsonl = cli(*run, "--set", "sink.kind=jsonl", "--set", "sink.path=scores.jsonl", check=False)
    csv = cli(*run, "--set", "sink.kind=csv", "--set", "sink.path=out", check=False)
    own_input = cli(
        *run, "--set", "sink.kind=csv", "--set", "sink.path=examples/iris/data/iris.csv", check=False
    )
    assert [r.returncode for r in (jsonl, csv, own_input)] == [1, 1, 1]
    assert _error_lines(jsonl.stderr) == [
        "error: scores.jsonl is a Parquet file, not JSON Lines output; refusing to replace it: "
        "pass --set sink.path=predictions.jsonl (or remove the file)"
    ]
    assert _error_lines(csv.stderr) == [
        "error: out is a JSON file, not CSV output; refusing to replace it: pass --set sink.path=out.csv "
        "(or remove the file)"
    ]
    assert _error_lines(own_input.stderr) == [
        "error: examples/iris/data/iris.csv is an input of this run; refusing to replace it: "
        "pass --set sink.path=ANOTHER_PATH"
    ]
    assert {name: Path(name).read_bytes() for name in before} == before
    assert pq.read_table("scores.jsonl").num_rows == 2


def test_a_dead_letter_path_never_replaces_another_kind_of_file(project: Path, cli: CliRunner) -> None:
    Path("notes.html").write_text("<!doctype html><html><body>my notes</body></html>")
    result = cli(
        "run",
        "examples/iris/pipeline.yaml",
        *ONNX,
        "--set",
        "sink.kind=parquet",
        "--set",
        "sink.path=out/p.parquet",
        "--set",
        "dead_letter=notes.html",
        check=False,
    )
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [
        "error: notes.html is an HTML page, not JSON Lines output; refusing to replace it: "
        "pass --set dead_letter=notes.jsonl (or remove the file)"
    ]
    assert "my notes" in Path("notes.html").read_text()
    assert not Path("out/p.parquet").exists()


def test_report_writes_html_only_over_html(project: Path, cli: CliRunner) -> None:
    with duckdb.connect("warehouse.duckdb") as con:
        con.execute("CREATE TABLE preds AS SELECT i::VARCHAR AS key, i % 3 AS prediction FROM range(30) t(i)")
    Path("data.csv").write_text("a,b\n1,2\n")
    onto_db = cli("report", "preds", "--db", "warehouse.duckdb", "-o", "warehouse.duckdb", check=False)
    onto_csv = cli("report", "preds", "--db", "warehouse.duckdb", "-o", "data.csv", check=False)
    assert (onto_db.returncode, onto_csv.returncode) == (1, 1)
    assert _error_lines(onto_db.stderr) == [
        "error: warehouse.duckdb is a DuckDB database, not an HTML report; refusing to replace it: "
        "pass -o warehouse.html (or remove the file)"
    ]
    assert _error_lines(onto_csv.stderr) == [
        "error: data.csv is a text file, not an HTML report; refusing to replace it: pass -o data.html "
        "(or remove the file)"
    ]
    assert Path("data.csv").read_text() == "a,b\n1,2\n"
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(*) FROM preds").fetchall() == [(30,)]
    # An earlier report is its own kind: replaced.
    Path("report.html").write_text("<!doctype html><html>old</html>")
    cli("report", "preds", "--db", "warehouse.duckdb", "-o", "report.html")
    assert "old" not in Path("report.html").read_text()
