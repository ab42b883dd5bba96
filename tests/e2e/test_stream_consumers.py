"""Consumers in separate processes: default names never collide, an explicit name held by a
live process is refused, and a dead consumer's messages are taken over at once."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import duckdb
import pytest

import inferline
from inferline.examples import iris_stream
from tests.e2e.streaming import Probe, queue_url, start_runner, stop, write_pipeline

BACKENDS = ["embedded", "redis"]


@pytest.mark.parametrize("backend", ["redis"])  # the embedded queue's takeover: test_stream_disk_full
def test_two_consumers_with_default_names_share_the_work_without_doing_any_twice(
    backend: str, project: Path, request: pytest.FixtureRequest
) -> None:
    url = queue_url(backend, project, lambda: request.getfixturevalue("redis_url"))
    write_pipeline(project, url, max_size=100)
    inferline.publish("iris", iris_stream.messages(4_000), url=url)
    # Each its own warehouse: DuckDB has one writer per file.
    runners = [
        start_runner(project, "--until-idle", "2", "--set", f"sink.path=w{i}.duckdb") for i in range(2)
    ]
    try:
        outputs = [runner.communicate(timeout=120) for runner in runners]
    finally:
        for runner in runners:
            stop(runner)
    read = 0
    for runner, (out, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, err
        read += int(re.search(r"([\d,]+) rows read", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert read == 4_000  # no message was handed to both
    ids: list[int] = []
    for i in range(2):
        with duckdb.connect(str(project / f"w{i}.duckdb"), read_only=True) as con:
            ids += [r[0] for r in con.sql("SELECT id FROM iris_stream").fetchall()]
    assert sorted(ids) == list(range(4_000))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_consumer_name_held_by_a_live_process_is_refused(
    backend: str, project: Path, request: pytest.FixtureRequest
) -> None:
    url = queue_url(backend, project, lambda: request.getfixturevalue("redis_url"))
    write_pipeline(project, url)
    spec = (project / "stream.yaml").read_text()
    (project / "stream.yaml").write_text(
        spec.replace("topic: iris}", "topic: iris, options: {consumer: worker}}")
    )
    inferline.publish("iris", iris_stream.messages(10), url=url)
    first = start_runner(project)
    probe = Probe(url)
    try:
        probe.wait(lambda: probe.backlog() == 0, first)  # running, and holding the name
        second = start_runner(project, "--until-idle", "1")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert err.strip() == (
            f"error: topic iris: consumer name 'worker' of group 'inferline' is in use by process "
            f"{first.pid} on {__import__('socket').gethostname()}; give each process its own "
            "source.options.consumer, or leave it out for a unique one"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        third = start_runner(project, "--until-idle", "0.5")  # the holder is dead: the name is free
        out, err = third.communicate(timeout=60)
        assert third.returncode == 0, err
    finally:
        stop(first)
        probe.close()
