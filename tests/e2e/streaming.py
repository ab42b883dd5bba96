"""Helpers for the streaming e2e tests: a pipeline file, a runner process, queue probes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from inferline.io.topics import open_topic
from tests.conftest import subprocess_env

STREAM_YAML = """\
name: iris-stream
source: {{kind: topic, url: "{url}", topic: iris}}
model: {{name: iris, uri: examples/iris/models/iris-*.onnx, inputs: feature}}
output:
  id: id
  input: {{sepal_length: "feature[0]", petal_width: "feature[3]"}}
  predict: prediction
sink: {{kind: duckdb, path: warehouse.duckdb, table: iris_stream}}
batch: {{max_size: {max_size}, max_wait_ms: 20}}
"""


def queue_url(backend: str, project: Path, redis_url: Callable[[], str]) -> str:
    return str(project / "queue.db") if backend == "embedded" else redis_url()


def write_pipeline(project: Path, url: str, *, max_size: int = 500) -> str:
    path = project / "stream.yaml"
    path.write_text(STREAM_YAML.format(url=url, max_size=max_size))
    return str(path)


def start_runner(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "inferline", "run", "stream.yaml", "--no-progress", *args],
        cwd=project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Probe:
    """Looks at the consumer group from outside, as an idle consumer named `observer`."""

    def __init__(self, url: str) -> None:
        self.topic = open_topic(url, "iris")
        self.consumer = self.topic.consumer("inferline", "observer")

    def backlog(self) -> int:
        return self.consumer.backlog()

    def pending(self) -> int:
        return self.consumer.pending()

    def wait(
        self, done: Callable[[], bool], runner: subprocess.Popen[str] | None, timeout: float = 90
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if runner is not None and runner.poll() is not None:
                out, err = runner.communicate()
                raise AssertionError(f"runner exited {runner.returncode} early\n{out}\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the stream")
            time.sleep(0.02)

    def close(self) -> None:
        self.consumer.close()
        self.topic.close()


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def table_ids(project: Path) -> list[int]:
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT id FROM iris_stream ORDER BY id").fetchall()
    return [int(r[0]) for r in rows]


def kill_mid_stream(project: Path, probe: Probe, total: int, *, after: int) -> int:
    """Start a runner, SIGKILL it once it has acked `after` of `total` messages; the backlog left."""
    runner = start_runner(project, "--until-idle", "30")
    try:
        probe.wait(lambda: probe.backlog() <= total - after, runner)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        stop(runner)
    left = probe.backlog()
    assert 0 < left < total, "the runner should have died mid-stream"
    return left


class RedisProcess:
    """A real redis-server with an append-only file in `folder`, so a restart keeps the data."""

    def __init__(self, folder: Path) -> None:
        from tests.conftest import free_port

        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",  # everysec may lose the last second of acknowledged writes on SIGKILL
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:  # also "loading the dataset" after a restart
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
