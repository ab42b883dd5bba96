"""The streaming guarantees, with real processes: SIGKILL + restart loses and duplicates
nothing, SIGTERM leaves nothing pending, publishers and the runner run side by side."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import inferline
from inferline.examples import iris_stream
from tests.conftest import CliRunner, subprocess_env
from tests.e2e.streaming import (
    Probe,
    kill_mid_stream,
    queue_url,
    start_runner,
    stop,
    table_ids,
    write_pipeline,
)

BACKENDS = ["embedded", "redis"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_stream_then_restart_gives_every_message_exactly_once(
    backend: str, project: Path, cli: CliRunner, request: pytest.FixtureRequest
) -> None:
    total = 20_000
    url = queue_url(backend, project, lambda: request.getfixturevalue("redis_url"))
    write_pipeline(project, url, max_size=500)
    inferline.publish("iris", iris_stream.messages(total), url=url)
    probe = Probe(url)
    left = kill_mid_stream(project, probe, total, after=2_000)
    result = cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    assert f"{left:,} rows read" in result.stdout  # the rest, including what was in flight
    assert table_ids(project) == list(range(total))
    assert probe.backlog() == 0 and probe.pending() == 0
    probe.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_finishes_the_batch_in_flight_and_leaves_nothing_pending(
    backend: str, project: Path, request: pytest.FixtureRequest
) -> None:
    url = queue_url(backend, project, lambda: request.getfixturevalue("redis_url"))
    write_pipeline(project, url, max_size=200)
    done = threading.Event()
    published = [0]

    def keep_publishing() -> None:
        # A steady stream, so SIGTERM arrives while batches are in flight.
        while not done.is_set():
            inferline.publish("iris", iris_stream.messages(50, start=published[0]), url=url)
            published[0] += 50
            done.wait(0.01)

    publisher = threading.Thread(target=keep_publishing)
    probe = Probe(url)
    runner = start_runner(project)
    publisher.start()
    try:
        probe.wait(lambda: published[0] - probe.backlog() >= 1_000, runner)
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=60)
    finally:
        done.set()
        publisher.join()
        stop(runner)
    assert runner.returncode == 0, err
    assert "rows read" in out
    assert probe.pending() == 0
    acked = published[0] - probe.backlog()
    assert table_ids(project) == list(range(acked))
    probe.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_publishers_and_runner_in_separate_processes_at_once(
    backend: str, project: Path, request: pytest.FixtureRequest
) -> None:
    url = queue_url(backend, project, lambda: request.getfixturevalue("redis_url"))
    write_pipeline(project, url, max_size=256)
    iris_stream.write_jsonl(str(project / "a.jsonl"), 2_000)
    iris_stream.write_jsonl(str(project / "b.jsonl"), 2_000, start=2_000)
    runner = start_runner(project, "--max-messages", "4000")
    publishers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inferline",
                "publish",
                "iris",
                "--url",
                url,
                "--from",
                name,
                "--rate",
                "4000",
            ],
            cwd=project,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a.jsonl", "b.jsonl")
    ]
    try:
        for publisher in publishers:
            out, err = publisher.communicate(timeout=60)
            assert publisher.returncode == 0, err
            assert out.startswith(f"published 2,000 messages to topic iris at {url}")
        out, err = runner.communicate(timeout=90)
        assert runner.returncode == 0, err
    finally:
        for process in (*publishers, runner):
            stop(process)
    assert "4,000 rows read, 4,000 predicted" in out
    assert table_ids(project) == list(range(4_000))
    probe = Probe(url)
    assert probe.pending() == 0 and probe.backlog() == 0
    probe.close()
