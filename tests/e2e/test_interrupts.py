"""Ctrl-C and SIGTERM during a batch run are honest (issue 15): the run is recorded as
`interrupted`, the exit code is 128 + the signal, a file output is not left half-written, and
a rerun gives every key exactly once. Real signals to a real `python -m inferline run`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from tests.conftest import subprocess_env

ROWS = 10_000
NOTICE = "interrupting the run"
SLOW_STEP = """
import os, time

def pause(batch):
    with open("progress.log", "a") as handle:
        handle.write(f"{batch.num_rows}\\n")
    time.sleep(float(os.environ["SLOW_SECONDS"]))
    return batch
"""


def _setup(project: Path) -> list[str]:
    lines = ["id,sepal_length,sepal_width,petal_length,petal_width,target"]
    lines += [f"{i},{4 + i % 40 / 10},3.0,{1 + i % 50 / 10},{i % 25 / 10},{i % 3}" for i in range(ROWS)]
    (project / "big.csv").write_text("\n".join(lines) + "\n")
    (project / "slowstep.py").write_text(SLOW_STEP)
    return [
        "run",
        "examples/iris/pipeline.yaml",
        "--no-progress",
        "--set",
        "source.path=big.csv",
        "--set",
        "steps=[{map: 'slowstep:pause'}]",
        "--set",
        "batch.max_size=250",
        # The ONNX model: unpickling the .joblib imports scikit-learn (~1.5 s CPU a process).
        "--set",
        "model.uri=examples/iris/models/iris-*.onnx",
    ]


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _batches_done(project: Path) -> int:
    log = project / "progress.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _interrupt(project: Path, args: list[str], *signals: signal.Signals) -> tuple[int, str, str]:
    """Run until a few batches are through the model, send `signals`, wait for the exit."""
    slow = 0.15 if len(signals) == 1 else 3
    with open(project / "stdout.txt", "wb") as out, open(project / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferline", *args],
            cwd=project,
            stdout=out,
            stderr=err,
            env=subprocess_env({"SLOW_SECONDS": str(slow)}),
        )
        try:
            # Some batches through the model, so some are (very likely) committed by now.
            _wait_until(lambda: _batches_done(project) >= 6 or proc.poll() is not None, "batches")
            assert proc.poll() is None, (project / "stderr.txt").read_text()
            for number, sig in enumerate(signals):
                proc.send_signal(sig)
                if number + 1 < len(signals):
                    # The next signal only once the first was seen, so they are two, not one.
                    _wait_until(lambda: NOTICE in (project / "stderr.txt").read_text(), "notice")
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, (project / "stdout.txt").read_text(), (project / "stderr.txt").read_text()


def _rerun(project: Path, args: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", *args, "--set", "batch.max_size=4096"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
        env=subprocess_env({"SLOW_SECONDS": "0"}),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ctrl_c_into_duckdb_is_recorded_as_interrupted_and_a_rerun_completes(project: Path) -> None:
    args = _setup(project)
    code, stdout, stderr = _interrupt(project, args, signal.SIGINT)
    assert code == 130, stderr
    assert "SIGINT: interrupting the run (Ctrl-C again to stop at once)" in stderr
    assert "iris-batch: interrupted: " in stdout
    assert "rows written stay; run again to finish: rows are upserted on key)" in stdout
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        ((tables,),) = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'iris_predictions'"
        ).fetchall()
        query = "SELECT count(*), count(DISTINCT key) FROM iris_predictions"
        ((count, distinct),) = con.execute(query).fetchall() if tables else ((0, 0),)
        ((status, error, predicted),) = con.execute(
            "SELECT status, error, rows_predicted FROM inferline_runs"
        ).fetchall()
    # Committed batches stay (how many depends on when the signal lands: possibly none).
    assert count == distinct == predicted < ROWS
    assert (status, error) == ("interrupted", "interrupted")
    assert f"{count:,} rows written stay" in stdout

    assert f"{ROWS:,} rows read, {ROWS:,} predicted" in _rerun(project, args)
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT key) FROM iris_predictions").fetchall() == [
            (ROWS, ROWS)
        ]
        statuses = con.execute("SELECT status FROM inferline_runs ORDER BY started_at").fetchall()
    assert statuses == [("interrupted",), ("ok",)]


def test_sigterm_leaves_no_partial_file_and_a_rerun_writes_every_key_once(project: Path) -> None:
    args = [*_setup(project), "--set", "sink.kind=parquet", "--set", "sink.path=out/p.parquet"]
    code, stdout, stderr = _interrupt(project, args, signal.SIGTERM)
    assert code == 143, stderr
    assert "SIGTERM: interrupting the run" in stderr
    assert "output: out/p.parquet not written (a file is written only by a complete run; run again)" in stdout
    assert sorted(p.name for p in Path("out").iterdir()) == ["inferline_runs.jsonl"]
    (run,) = [json.loads(line) for line in Path("out/inferline_runs.jsonl").read_text().splitlines()]
    assert run["status"] == "interrupted" and run["rows_read"] < ROWS

    _rerun(project, args)
    keys = pq.read_table("out/p.parquet")["key"].to_pylist()
    assert len(keys) == len(set(keys)) == ROWS


def test_a_second_ctrl_c_ends_at_once_and_is_still_recorded_as_interrupted(project: Path) -> None:
    args = _setup(project)
    code, stdout, stderr = _interrupt(project, args, signal.SIGINT, signal.SIGINT)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "iris-batch: interrupted: " in stdout
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        ((count,),) = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'iris_predictions'"
        ).fetchall()
        if count:
            ((count,),) = con.execute("SELECT count(*) FROM iris_predictions").fetchall()
        assert con.execute("SELECT status, rows_predicted FROM inferline_runs").fetchall() == [
            ("interrupted", count)
        ]
    assert count < ROWS
