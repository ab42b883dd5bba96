"""A new model that writes more columns: the stream's DuckDB table grows a nullable column,
a Parquet sink starts a new part with the wider schema, instead of the run dying
(`existing table has no column 'scores'`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import joblib
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

import inferline
from inferline.examples import iris_stream
from inferline.io.parts import part_files
from tests.conftest import CliRunner, subprocess_env
from tests.e2e.streaming import Probe, stop

PIPELINE = """\
name: iris-grow
source: {{kind: topic, url: queue.db, topic: iris}}
model: {{name: iris, uri: "models/iris-*.joblib", inputs: feature, watch: true, watch_interval: 0.2}}
key: id
sink: {sink}
batch: {{max_size: 20, max_wait_ms: 10}}
"""
DUCKDB_SINK = "{kind: duckdb, path: warehouse.duckdb, table: preds}"
PARQUET_SINK = "{kind: parquet, path: out/preds.parquet, options: {roll_seconds: 0.2}}"


def _dump(model: object, path: Path) -> None:
    joblib.dump(model, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)  # the watcher never sees half a file


def _run_through_a_swap(project: Path, sink: str) -> tuple[str, str]:
    """100 messages on an SVC (no `scores`), a swap to a LogisticRegression, 200 more:
    the run's stdout and stderr."""
    x, y = load_iris(return_X_y=True)
    (project / "models").mkdir()
    _dump(SVC().fit(x, y), project / "models" / "iris-1.joblib")  # no predict_proba: no scores
    (project / "grow.yaml").write_text(PIPELINE.format(sink=sink))
    inferline.publish("iris", iris_stream.messages(100), url="queue.db")
    out_file = (project / "out.txt").open("w")
    runner = subprocess.Popen(
        [sys.executable, "-m", "inferline", "run", "grow.yaml", "--no-progress", "--max-messages", "300"],
        cwd=project,
        env=subprocess_env(),
        stdout=out_file,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    assert runner.stderr is not None
    reader = threading.Thread(target=lambda: stderr.extend(runner.stderr or []), daemon=True)
    reader.start()
    probe = Probe("queue.db")
    try:
        probe.wait(lambda: probe.backlog() == 0, runner)
        _dump(LogisticRegression(max_iter=500).fit(x, y), project / "models" / "iris-2.joblib")
        deadline = time.monotonic() + 60
        while not any("now serving iris/2" in line for line in stderr):
            assert runner.poll() is None and time.monotonic() < deadline, "".join(stderr)
            time.sleep(0.02)
        inferline.publish("iris", iris_stream.messages(200, start=100), url="queue.db")
        runner.wait(timeout=90)
    finally:
        stop(runner)
        probe.close()
        out_file.close()
    reader.join(timeout=10)
    assert runner.returncode == 0, "".join(stderr)
    return (project / "out.txt").read_text(), "".join(stderr)


def test_a_swap_to_a_model_with_scores_adds_the_column(project: Path) -> None:
    out, err = _run_through_a_swap(project, DUCKDB_SINK)
    assert "300 rows read, 300 predicted, 0 dead-lettered" in out
    assert "warehouse.duckdb table preds: added column scores" in err, err
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT id, model_id, scores FROM preds ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(range(300))
    assert all(scores is None for _, _, scores in rows[:100])
    assert all(len(scores) == 3 for _, _, scores in rows[100:])
    assert {model for _, model, _ in rows[100:]} == {"iris/2"}


def test_a_swap_into_parquet_starts_a_wider_part_and_a_restart_adds_parts_and_skips_a_corrupt_newest_model(
    project: Path, cli: CliRunner
) -> None:
    out, err = _run_through_a_swap(project, PARQUET_SINK)
    assert "300 rows read, 300 predicted, 0 dead-lettered" in out
    folder = project / "out" / "preds.parquet"  # a stream's file sink is a directory of parts
    parts = part_files(str(folder))
    # The new model's rows start a part of their own, with the wider schema (a part has one).
    assert "scores" not in pq.read_schema(parts[0]).names
    assert "scores" in pq.read_schema(parts[-1]).names
    # Readers see one table over every part: older rows NULL in `scores`.
    query = (
        "SELECT id, model_id, scores FROM read_parquet('out/preds.parquet/*.parquet', union_by_name = true) "
        "ORDER BY id"
    )
    with duckdb.connect() as con:
        rows = con.sql(query).fetchall()
    assert [r[0] for r in rows] == list(range(300))
    swapped = next(i for i, (_, model, _) in enumerate(rows) if model == "iris/2")
    assert swapped >= 100 and all(s is None for _, m, s in rows if m == "iris/1")
    assert all(m == "iris/2" and len(s) == 3 for _, m, s in rows[swapped:])
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    assert table.num_rows == 300 and table.column("scores").null_count == swapped
    before = {p: Path(p).read_bytes() for p in parts}

    # A restart whose newest model file is corrupt starts on the newest one that loads; its
    # rows go to new parts beside the first run's, which stay as they were.
    (project / "models" / "iris-3.joblib").write_bytes(b"\x80\x04 not really a pickle")
    inferline.publish("iris", iris_stream.messages(20, start=300), url="queue.db")
    rerun = cli("run", "grow.yaml", "--no-progress", "--until-idle", "1")
    assert "20 rows read, 20 predicted, 0 dead-lettered" in rerun.stdout
    warning = next(line for line in rerun.stderr.splitlines() if "iris/3" in line)
    assert warning.startswith("warning: model iris/3: cannot load ")
    assert warning.endswith("starting on iris/2, the newest version that loads; retrying with backoff")
    assert {p: Path(p).read_bytes() for p in parts} == before
    new = [p for p in part_files(str(folder)) if p not in before]
    rows = pa.concat_tables([pq.read_table(p) for p in new]).to_pylist()
    assert [r["id"] for r in rows] == list(range(300, 320))
    assert {r["model_id"] for r in rows} == {"iris/2"} and all(len(r["scores"]) == 3 for r in rows)
    with duckdb.connect() as con:
        assert [r[0] for r in con.sql(query).fetchall()] == list(range(320))


def test_a_column_that_changed_type_dead_letters_the_rows_and_the_run_goes_on(
    project: Path, cli: CliRunner
) -> None:
    with duckdb.connect(str(project / "warehouse.duckdb")) as con:  # an older table's types
        con.execute("CREATE TABLE iris_predictions (key VARCHAR PRIMARY KEY, prediction BOOLEAN)")
    # The ONNX iris model: unpickling the .joblib imports scikit-learn (~1.5 s CPU).
    onnx = ("--set", "model.uri=examples/iris/models/iris-*.onnx")
    result = cli("run", "examples/iris/pipeline.yaml", *onnx, "--no-progress")
    assert "150 rows read, 0 predicted, 150 dead-lettered" in result.stdout
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        errors = con.sql("SELECT DISTINCT stage, error FROM iris_predictions_errors").fetchall()
        assert con.sql("SELECT count(*) FROM iris_predictions_errors").fetchall() == [(150,)]
    assert errors == [
        (
            "sink",
            "warehouse.duckdb table iris_predictions: column 'prediction' is BOOLEAN in the existing "
            "table but this pipeline writes BIGINT; drop the table or write to another "
            "(--set sink.table=NAME)",
        )
    ]
