"""Retention with a real runner on Redis: the stream shrinks as batches are acked, and a
SIGKILL mid-stream loses nothing the trims could have touched."""

from __future__ import annotations

from pathlib import Path

import redis

import inferline
from inferline.examples import iris_stream
from tests.conftest import CliRunner
from tests.e2e.streaming import Probe, kill_mid_stream, table_ids, write_pipeline


def _trim_after_every_batch(project: Path, url: str, max_size: int) -> None:
    path = Path(write_pipeline(project, url, max_size=max_size))
    text = path.read_text()
    path.write_text(text.replace("topic: iris}", "topic: iris, options: {trim_every: 1}}", 1))


def test_sigkill_with_trims_after_every_batch_then_restart_loses_nothing(
    project: Path, cli: CliRunner, redis_url: str
) -> None:
    total = 5_000
    _trim_after_every_batch(project, redis_url, max_size=100)
    inferline.publish("iris", iris_stream.messages(total), url=redis_url)
    client = redis.Redis.from_url(redis_url)
    probe = Probe(redis_url)
    left = kill_mid_stream(project, probe, total, after=1_500)
    # Acked batches were trimmed as the run went; nothing unacked was.
    assert left <= client.xlen("iris") < total - 1_000
    result = cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    assert f"{left:,} rows read" in result.stdout
    assert table_ids(project) == list(range(total))
    assert probe.backlog() == 0 and probe.pending() == 0 and client.xlen("iris") == 0
    probe.close()
    client.close()
