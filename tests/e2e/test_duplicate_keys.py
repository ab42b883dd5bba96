"""A `key:` column that is not unique is reported, not silent (issue 15)."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from tests.conftest import CliRunner

# The ONNX iris model: what these runs check does not depend on the model, and unpickling the
# .joblib imports scikit-learn (~1.5 s CPU a process).
ONNX = ("--set", "model.uri=examples/iris/models/iris-*.onnx")


def test_duplicate_keys_are_counted_warned_and_the_last_row_wins(project: Path, cli: CliRunner) -> None:
    result = cli("run", "examples/iris/pipeline.yaml", *ONNX, "--no-progress", "--set", "key=target")
    summary = "150 rows read, 150 predicted, 0 dead-lettered, 147 duplicate keys (last write wins)"
    assert summary in result.stdout
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "warning: key column 'target' is not unique ('0' appears more than once): rows with the same key "
        "replace each other in the table (the last one read is kept); name a unique column in key:"
    ]
    with open("examples/iris/data/iris.csv", newline="") as handle:
        last = {row["target"]: row["id"] for row in csv.DictReader(handle)}
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        rows = dict(con.execute("SELECT key, id::VARCHAR FROM iris_predictions").fetchall())
        history = con.execute("SELECT rows_predicted, duplicate_keys FROM inferline_runs").fetchall()
    assert rows == last  # three keys, each holding the last row read with it
    assert history == [(150, 147)]


def test_a_file_sink_keeps_every_row_and_says_how_many_keys_repeat(project: Path, cli: CliRunner) -> None:
    result = cli(
        "run",
        "examples/iris/pipeline.yaml",
        *ONNX,
        "--no-progress",
        "--set",
        "key=target",
        "--set",
        "sink.kind=csv",
        "--set",
        "sink.path=out/p.csv",
    )
    assert "150 predicted, 0 dead-lettered, 147 duplicate keys in" in result.stdout
    assert "the output keeps every row" in result.stderr
    with open("out/p.csv", newline="") as handle:
        keys = [row["key"] for row in csv.DictReader(handle)]
    assert len(keys) == 150 and set(keys) == {"0", "1", "2"}
