"""The warehouse while a stream writes it, with real processes: readers through every
documented path see counts that only grow and end exact; killed readers and writers lose
nothing; two streams and a batch backfill write one warehouse side by side."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import inferline
from inferline.examples import iris_stream as iris_messages
from inferline.io.warehouse import connect
from tests.conftest import CliRunner, subprocess_env
from tests.e2e.server import running_server
from tests.e2e.streaming import start_runner, stop, table_ids, write_pipeline

# A plain-Python reader, as the README shows it: count(*) every 50 ms, one line per count.
POLLER = """
import sys, time
from inferline.io.warehouse import connect
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with connect("warehouse.duckdb") as con:
            print(con.sql("SELECT count(*) FROM iris_stream").fetchall()[0][0], flush=True)
    except Exception as exc:
        if "does not exist" not in str(exc) and "not found" not in str(exc):  # before the first commit
            raise
    time.sleep(0.05)
"""

# Holds a read turn (a query that never ends) until killed.
HOLDER = """
import time
from inferline.io.warehouse import connect
with connect("warehouse.duckdb") as con:
    con.sql("SELECT count(*) FROM iris_stream").fetchall()
    print("holding", flush=True)
    time.sleep(120)
"""


def _python(project: Path, code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Publisher:
    """Publishes ~250 messages/s on a thread until stopped, so the stream keeps running and
    commits every few batches' wait; the readers' CLI processes take 10-30 s at load, and every
    message costs the runner CPU (1,000/s was 10,650 messages, 20 s CPU at load 5)."""

    def __init__(self, url: str, *, chunk: int = 25) -> None:
        self.url, self.chunk = url, chunk
        self.published = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set() and self.published < 100_000:
            inferline.publish("iris", iris_messages.messages(self.chunk, start=self.published), url=self.url)
            self.published += self.chunk
            self.done.wait(0.1)

    def __enter__(self) -> Publisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=60)


def _counts(output: str) -> list[int]:
    return [int(line) for line in output.split()]


def _wait_rows(project: Path, rows: int, runner: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(str(project / "warehouse.duckdb")) as con:
                if con.sql("SELECT count(*) FROM iris_stream").fetchall()[0][0] >= rows:
                    return
        except Exception as exc:  # noqa: BLE001 - the file and table appear with the first commit
            if "does not exist" not in str(exc) and "not found" not in str(exc):
                raise
        if runner.poll() is not None:
            out, err = runner.communicate()
            raise AssertionError(f"runner exited {runner.returncode}\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {rows} rows"
        time.sleep(0.05)


def test_readers_see_counts_only_grow_while_a_stream_writes(project: Path, cli: CliRunner) -> None:
    """inferline report, sql (a script writing a model and reading), the dashboard and Python
    at once."""
    url = str(project / "queue.db")
    write_pipeline(project, url, max_size=250)
    (project / "store").mkdir()
    runner = start_runner(project, "--until-idle", "3")
    poller = _python(project, POLLER)
    try:
        with (
            running_server(
                project / "store", "--warehouse", "warehouse.duckdb", "--watch-interval", "0"
            ) as base,
            Publisher(url) as publisher,
        ):
            _wait_rows(project, 1, runner)
            # The CLI readers while the stream commits: no lock errors, counts never shrink.
            panel = [_dashboard_rows(base)]  # re-read at most once a second: compared among itself
            report = cli(
                "report", "iris_stream", "--db", "warehouse.duckdb", "--prediction", "predict", "-o", "r.html"
            )
            panel.append(_dashboard_rows(base))
            # A script that writes (CREATE MODEL) takes a writer's turn between the stream's commits,
            # and reads the table again.
            bq = cli(
                "sql",
                "--db",
                "warehouse.duckdb",
                "--format",
                "csv",
                "CREATE OR REPLACE MODEL iris OPTIONS (model_type = 'sklearn', "
                "model_path = 'examples/iris/models/iris-*.joblib'); "
                "SELECT count(*) AS n FROM ML.PREDICT(MODEL iris, (SELECT input.sepal_length AS "
                "sepal_length, 3.0 AS sepal_width, 1.5 AS petal_length, input.petal_width AS petal_width "
                "FROM iris_stream))",
            )
            panel.append(_dashboard_rows(base))
            reported = report.stdout.split("r.html: ")[1].split()[0]  # "1,875 rows, 3 classes"
            seen = [int(reported.replace(",", "")), int(bq.stdout.split()[1])]
            assert 0 < seen[0] <= seen[1] and 0 < panel[0] and panel == sorted(panel), (seen, panel)
            assert runner.poll() is None, "the stream should still be running"
            publisher.done.set()
            publisher.thread.join(timeout=60)
            runner.wait(timeout=120)
            assert runner.returncode == 0, runner.communicate()
            deadline = time.monotonic() + 30  # the dashboard re-reads counts at most once a second
            while _dashboard_rows(base) != publisher.published:
                assert time.monotonic() < deadline, (_dashboard_rows(base), publisher.published)
                time.sleep(0.2)
            assert 'id="warehouse"' in httpx.get(f"{base}/").text
        assert 'data-value="' in (project / "r.html").read_text()
    finally:
        stop(runner)
        poller.send_signal(signal.SIGKILL)
        out, err = poller.communicate(timeout=30)
    counts = _counts(out)
    assert "Could not set lock" not in err and "Traceback" not in err, err
    assert len(counts) >= 3 and counts == sorted(counts), counts[:50]
    assert counts[-1] == publisher.published
    assert table_ids(project) == list(range(publisher.published))


def _dashboard_rows(base: str) -> int:
    panel = httpx.get(f"{base}/dashboard/stats", timeout=30).json()["warehouse"]
    assert panel["error"] is None, panel
    return int({t["name"]: t["rows"] for t in panel["tables"]}["iris_stream"])


def test_sigkill_of_a_reader_mid_query_and_of_the_writer_lose_nothing(project: Path, cli: CliRunner) -> None:
    total = 8_000
    url = str(project / "queue.db")
    write_pipeline(project, url, max_size=250)
    inferline.publish("iris", iris_messages.messages(total), url=url)
    runner = start_runner(project, "--until-idle", "30")
    try:
        _wait_rows(project, 250, runner)
        holder = _python(project, HOLDER)
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        holder.send_signal(signal.SIGKILL)  # mid-query, holding its turn: the kernel frees it
        holder.communicate(timeout=30)
        _wait_rows(project, 1_000, runner)
        runner.send_signal(signal.SIGKILL)  # the writer, mid-stream (often mid-commit)
        runner.wait(timeout=30)
    finally:
        stop(runner)
    cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    assert table_ids(project) == list(range(total))


def test_two_streams_and_a_batch_backfill_write_one_warehouse(project: Path, cli: CliRunner) -> None:
    url = str(project / "queue.db")
    write_pipeline(project, url, max_size=250)
    second = (project / "stream.yaml").read_text().replace("topic: iris", "topic: iris2")
    (project / "stream2.yaml").write_text(second.replace("table: iris_stream", "table: iris_stream2"))
    inferline.publish("iris", iris_messages.messages(4_000), url=url)
    inferline.publish("iris2", iris_messages.messages(3_000), url=url)
    args = ["--no-progress", "--until-idle", "2"]
    env = subprocess_env()
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "inferline", "run", spec, *extra],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec, extra in (
            ("stream.yaml", args),
            ("stream2.yaml", args),
            ("examples/iris/pipeline.yaml", ["--no-progress"]),
        )
    ]
    try:
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            assert "Could not set lock" not in err
    finally:
        for run in runs:
            stop(run)
    with connect(str(project / "warehouse.duckdb")) as con:
        counts = con.sql(
            "SELECT (SELECT count(DISTINCT id) FROM iris_stream), (SELECT count(*) FROM iris_stream2), "
            "(SELECT count(*) FROM iris_predictions), (SELECT count(*) FROM inferline_runs)"
        ).fetchall()[0]
    assert counts == (4_000, 3_000, 150, 3)


def test_a_writer_waits_its_turn_with_one_line(project: Path) -> None:
    with connect("warehouse.duckdb", read_only=False) as con:
        con.sql("CREATE TABLE placeholder (x INTEGER)")
    with connect("warehouse.duckdb"):  # a reader holds the file
        run = subprocess.Popen(
            [sys.executable, "-m", "inferline", "run", "examples/iris/pipeline.yaml", "--no-progress"],
            cwd=project,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert run.stderr is not None
            line = run.stderr.readline()
        except BaseException:
            stop(run)
            raise
    out, err = run.communicate(timeout=120)
    assert line.startswith("waiting for warehouse.duckdb: another process is using it"), line + err
    assert run.returncode == 0 and "waiting for" not in err, err
    with connect("warehouse.duckdb") as con:
        assert con.sql("SELECT count(*) FROM iris_predictions").fetchall() == [(150,)]
