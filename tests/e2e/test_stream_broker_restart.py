"""Redis is SIGKILLed mid-stream and restarted: the same consumer and publisher processes
wait, reconnect and finish, with every message exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from inferline.examples import iris_stream
from tests.conftest import subprocess_env
from tests.e2e.streaming import RedisProcess, start_runner, stop, table_ids, write_pipeline

TOTAL = 3_000


def _progress(url: str) -> tuple[int, int]:
    """(entries in the stream, entries the runner's group has acked): -1 for no group yet."""
    client = redis.Redis.from_url(url)
    try:
        groups = client.xinfo_groups("iris") if client.exists("iris") else []
        if not groups:
            return int(client.xlen("iris")), -1
        read = sum(int(g.get("entries-read") or 0) - int(g.get("pending") or 0) for g in groups)
        return int(client.xlen("iris")), read
    except redis.RedisError:
        return -1, -1
    finally:
        client.close()


def _wait(done: Callable[[], bool], *processes: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert all(p.poll() is None for p in processes), "a process ended before the outage"
        assert time.monotonic() < deadline, "timed out waiting for the stream"
        time.sleep(0.05)


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(project: Path) -> None:
    server = RedisProcess(project / "redis")
    server.start()
    write_pipeline(project, server.url, max_size=200)
    iris_stream.write_jsonl(str(project / "iris.jsonl"), TOTAL)
    runner = start_runner(project, "--max-messages", str(TOTAL), "--broker-timeout", "60")
    _wait(lambda: _progress(server.url)[1] >= 0, runner)  # the runner's group is there
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferline",
            "publish",
            "iris",
            "--url",
            server.url,
            "--from",
            "iris.jsonl",
            "--rate",
            "500",
            "--broker-timeout",
            "60",
        ],
        cwd=project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _progress(server.url)[1] >= 500, runner, publisher)  # some are committed
        server.kill()
        time.sleep(5)  # the outage itself (issue 17: 5 s): both processes must sit through it
        server.start()
        published, p_err = publisher.communicate(timeout=90)
        out, err = runner.communicate(timeout=90)
    finally:
        stop(publisher)
        stop(runner)
        server.kill()
    assert publisher.returncode == 0, p_err
    assert published.startswith(f"published {TOTAL:,} messages to topic iris")
    assert runner.returncode == 0, err
    assert f"{TOTAL:,} rows read, {TOTAL:,} predicted" in out
    for log in (p_err, err):
        assert "connection lost" in log and "connection back after" in log, log
        assert "Traceback" not in log
    ids = table_ids(project)
    missing, twice = set(range(TOTAL)) - set(ids), len(ids) - len(set(ids))
    assert not missing and not twice, f"lost {sorted(missing)[:20]} ({len(missing)}), {twice} twice\n{err}"


def test_a_broker_that_stays_away_ends_the_run_with_one_line(project: Path) -> None:
    server = RedisProcess(project / "redis")
    server.start()
    write_pipeline(project, server.url)
    runner = start_runner(project, "--broker-timeout", "1")
    try:
        _wait(lambda: _progress(server.url)[1] >= 0, runner)
        server.kill()
        out, err = runner.communicate(timeout=60)
    finally:
        stop(runner)
        server.kill()
    assert runner.returncode == 1
    lines = err.strip().splitlines()
    assert "connection lost" in lines[0]
    assert lines[-1].startswith("error: topic iris: Redis at ")
    assert "giving up (--broker-timeout 1)" in lines[-1]
