"""Hot swap in a running stream, as a user does it: `inferline run` on a topic, a publisher,
and `inferline models add|pin` from another shell."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
from sklearn.dummy import DummyClassifier

import inferline
from inferline.examples import iris_stream
from inferline.io.parts import part_files
from tests.conftest import CliRunner, subprocess_env
from tests.e2e.streaming import Probe, stop

PIPELINE = """\
name: iris-swap
source: {kind: topic, url: queue.db, topic: iris}
model: {name: iris, store: model_store, inputs: feature, watch: true, watch_interval: 0.5}
output: {id: id, prediction: prediction, model_id: model_id}
sink: {kind: jsonl, path: out.jsonl, options: {roll_seconds: 0.2}}
batch: {max_size: 20, max_wait_ms: 10}
"""


class Publisher(threading.Thread):
    """Publishes a steady stream of iris messages, remembering when each id was sent."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.sent, self.done = url, 0, threading.Event()
        self.sent_at: list[tuple[int, float]] = []  # (first id of a chunk, time before sending)

        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.done.is_set():
                self.sent_at.append((self.sent, time.monotonic()))
                inferline.publish("iris", iris_stream.messages(10, start=self.sent), url=self.url)
                self.sent += 10
                self.done.wait(0.01)
        except BaseException as exc:
            self.failure = exc

    def first_id_sent_after(self, moment: float) -> int:
        while True:
            if self.failure is not None:
                raise AssertionError(f"publisher failed: {self.failure!r}")
            found = [first for first, at in self.sent_at if at > moment]
            if found:
                return found[0]
            time.sleep(0.01)


class Runner:
    """`inferline run` in a child process; stderr collected as it comes."""

    def __init__(self, project: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inferline", "run", "swap.yaml", "--no-progress"],
            cwd=project,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        assert self.process.stderr is not None
        stream = self.process.stderr
        self.reader = threading.Thread(target=lambda: self.stderr.extend(stream), daemon=True)
        self.reader.start()
        self.parts = project / "out.jsonl"
        self._read: dict[str, list[dict[str, object]]] = {}

    def rows(self) -> list[dict[str, object]]:
        """The rows committed so far (a stream's JSONL sink rolls a part every 0.2 s; a part
        never changes once it is there, so each is read once)."""
        if not self.parts.exists():
            return []
        for part in part_files(str(self.parts)):
            if part not in self._read:
                self._read[part] = [json.loads(line) for line in Path(part).read_text().splitlines()]
        return [row for rows in self._read.values() for row in rows]

    def wait(self, condition: Callable[[], bool], timeout: float = 30.0) -> float:
        started = time.monotonic()
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"runner exited {self.process.returncode}\n{''.join(self.stderr)}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"timed out; runner stderr:\n{''.join(self.stderr)}")
            time.sleep(0.02)
        return time.monotonic() - started


def test_a_running_stream_swaps_versions_survives_a_bad_one_and_rolls_back(
    project: Path, cli: CliRunner
) -> None:
    cli("models", "add", "iris", "examples/iris/models/iris-1.joblib")
    seven = DummyClassifier(strategy="constant", constant=7).fit(np.zeros((3, 4)), [0, 1, 7])
    joblib.dump(seven, project / "seven.joblib")
    (project / "broken.joblib").write_bytes(b"\x80\x04 half a pickle")
    (project / "swap.yaml").write_text(PIPELINE)
    url = str(project / "queue.db")
    publisher = Publisher(url)
    publisher.start()
    runner = Runner(project)
    try:
        runner.wait(lambda: len(runner.rows()) >= 100)

        cli("models", "add", "iris", "seven.joblib")
        added = time.monotonic()
        took = runner.wait(lambda: any(r["model_id"] == "iris/2" for r in runner.rows()))
        assert took < 5.0, f"iris/2 served {took:.1f} s after the add"
        runner.wait(
            lambda: any("model iris: now serving iris/2 (was iris/1)" in line for line in runner.stderr)
        )
        v2_from = publisher.first_id_sent_after(time.monotonic())

        cli("models", "add", "iris", "broken.joblib")
        runner.wait(lambda: any("warning: model iris/3: cannot load" in line for line in runner.stderr))
        after_v3 = publisher.first_id_sent_after(time.monotonic())
        runner.wait(lambda: len(runner.rows()) >= after_v3 + 100)

        cli("models", "pin", "iris", "1")
        runner.wait(lambda: [r["model_id"] for r in runner.rows()][-1] == "iris/1", timeout=5.0)
        v1_from = publisher.first_id_sent_after(time.monotonic())
        runner.wait(lambda: len(runner.rows()) >= v1_from + 100)

        publisher.done.set()
        publisher.join()
        probe = Probe(url)
        runner.wait(lambda: probe.backlog() == 0)
        runner.process.send_signal(signal.SIGTERM)
        out, _ = runner.process.communicate(timeout=60)
        runner.reader.join(timeout=10)
        probe.close()
    finally:
        publisher.done.set()
        stop(runner.process)
    assert runner.process.returncode == 0, "".join(runner.stderr)
    assert time.monotonic() - added < 60

    rows = runner.rows()
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == publisher.sent and sorted(by_id) == list(range(publisher.sent)), "lost or duplicated"
    assert f"{publisher.sent:,} rows read" in out

    models = {r["id"]: r["model_id"] for r in rows}
    assert models[0] == "iris/1"
    # Once a row from a version has been seen, every message sent later gets that version;
    # rows committed before the pin (up to after_v3 + 100) were all still on iris/2.
    assert all(models[i] == "iris/2" for i in range(v2_from, after_v3 + 100))
    assert all(models[i] == "iris/1" for i in range(v1_from, publisher.sent))
    switches = [i for i in range(1, publisher.sent) if models[i] != models[i - 1]]
    assert len(switches) == 2, "one swap to iris/2, one rollback to iris/1"
    assert "iris/3" not in models.values()
    for row in rows:
        assert (row["prediction"] == 7) == (row["model_id"] == "iris/2")
        assert row["prediction"] in (0, 1, 2, 7)

    warnings = [line for line in runner.stderr if "model iris/3: cannot load" in line]
    assert len(warnings) == 1 and "still serving iris/2" in warnings[0]
    assert "model load error: model iris/3: cannot load" in out
