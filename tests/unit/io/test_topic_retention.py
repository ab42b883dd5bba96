"""Retention: a consumer drops what every group has acked, and never what one still needs."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferline.errors import SpecError
from inferline.io.topic_source import TopicSource, retention
from inferline.io.topics import open_topic
from inferline.io.topics.base import Retention
from inferline.io.topics.redis import RedisConsumer, RedisTopic
from inferline.pipeline import parse_spec
from tests.conftest import subprocess_env

EVERY_ACK = Retention(every_messages=1, every_seconds=3600)


@pytest.fixture
def redis_topic(redis_url: str) -> Iterator[RedisTopic]:
    topic = open_topic(redis_url, "t")
    assert isinstance(topic, RedisTopic)
    try:
        yield topic
    finally:
        topic.close()


def _xlen(topic: RedisTopic) -> int:
    return int(topic.client.xlen(topic.name))


def _bodies(n: int) -> list[bytes]:
    return [f'{{"id": {i}}}'.encode() for i in range(n)]


def _read_all(consumer: Any, want: int) -> list[Any]:
    got: list[Any] = []
    for _ in range(50):
        got += consumer.read(want - len(got), timeout=0.05)
        if len(got) >= want:
            break
    return got


def test_acked_entries_are_trimmed_and_the_rest_still_reads(redis_topic: RedisTopic) -> None:
    ids = redis_topic.publish(_bodies(50))
    consumer = redis_topic.consumer("g", "c", retention=EVERY_ACK)
    first = consumer.read(30, timeout=1.0)
    assert _xlen(redis_topic) == 50  # delivered is not enough: only acked entries go
    consumer.ack([m.id for m in first[:10]])
    assert _xlen(redis_topic) == 40
    consumer.ack([m.id for m in first[10:]])
    assert _xlen(redis_topic) == 20 and consumer.backlog() == 20 and consumer.pending() == 0
    rest = _read_all(consumer, 20)
    assert [m.id for m in rest] == ids[30:]
    assert [m.body for m in rest] == _bodies(50)[30:]
    consumer.ack([m.id for m in rest])
    assert _xlen(redis_topic) == 0 and consumer.backlog() == 0


def test_trims_wait_for_enough_acks_or_time(redis_topic: RedisTopic) -> None:
    now = [100.0]
    redis_topic.publish(_bodies(20))
    consumer = RedisConsumer(
        redis_topic,
        "g",
        "c",
        lease_seconds=60,
        retention=Retention(every_messages=8, every_seconds=5),
        clock=lambda: now[0],
    )
    consumer.open()
    messages = consumer.read(20, timeout=1.0)
    consumer.ack([m.id for m in messages[:5]])
    assert _xlen(redis_topic) == 20  # 5 acks, no time passed: not yet
    consumer.ack([m.id for m in messages[5:8]])
    assert _xlen(redis_topic) == 12  # 8 acks since the last trim
    consumer.ack([messages[8].id])
    now[0] += 4.9
    consumer.ack([messages[9].id])
    assert _xlen(redis_topic) == 12
    now[0] += 0.1
    consumer.ack([messages[10].id])
    assert _xlen(redis_topic) == 9  # 5 s since the last trim
    now[0] += 60
    assert _xlen(redis_topic) == 9  # time alone, without acks, trims nothing
    consumer.ack([m.id for m in messages[11:13]])
    assert _xlen(redis_topic) == 7
    consumer.ack([m.id for m in messages[13:]])
    assert _xlen(redis_topic) == 7
    consumer.close()  # what was acked since the last trim goes at close
    assert _xlen(redis_topic) == 0


def test_a_slow_group_loses_nothing_it_has_not_acked(redis_topic: RedisTopic) -> None:
    ids = redis_topic.publish(_bodies(40))
    fast = redis_topic.consumer("fast", "c", retention=EVERY_ACK)
    slow = redis_topic.consumer("slow", "c", retention=EVERY_ACK)
    fast.ack([m.id for m in _read_all(fast, 40)])
    assert _xlen(redis_topic) == 40  # "slow" has nothing pending but has not been handed anything
    first = slow.read(10, timeout=1.0)
    slow.ack([m.id for m in first[:5]])
    assert _xlen(redis_topic) == 35  # "slow" still has ids[5:10] pending
    later = _read_all(slow, 30)
    assert [m.id for m in later] == ids[10:]
    slow.ack([m.id for m in later])
    assert _xlen(redis_topic) == 35 and slow.trim() == 0  # the pending five hold the rest
    again = redis_topic.consumer("slow", "c", retention=EVERY_ACK).read(10, timeout=1.0)
    assert [m.id for m in again] == ids[5:10]
    assert [m.body for m in again] == _bodies(40)[5:10]
    slow.ack([m.id for m in again])
    assert _xlen(redis_topic) == 0


def test_a_group_behind_on_delivery_keeps_what_it_was_not_handed(redis_topic: RedisTopic) -> None:
    ids = redis_topic.publish(_bodies(30))
    ahead = redis_topic.consumer("ahead", "c", retention=EVERY_ACK)
    behind = redis_topic.consumer("behind", "c", retention=EVERY_ACK)
    behind.ack([m.id for m in behind.read(12, timeout=1.0)])  # nothing pending, 18 to go
    ahead.ack([m.id for m in _read_all(ahead, 30)])
    assert _xlen(redis_topic) == 18
    rest = _read_all(behind, 18)
    assert [m.id for m in rest] == ids[12:] and [m.body for m in rest] == _bodies(30)[12:]


_CRASHING_WORKER = """
import sys, time
from inferline.io.topics import open_topic
from inferline.io.topics.base import Retention

topic = open_topic(sys.argv[1], "t")
worker = topic.consumer("g", "worker", retention=Retention(every_messages=1, every_seconds=3600))
messages = worker.read(30, timeout=5.0)
worker.ack([m.id for m in messages[:20]])
print(len(messages), topic.client.xlen("t"), flush=True)
time.sleep(600)
"""


def test_a_killed_consumers_pending_entries_survive_trims_and_come_back(
    redis_topic: RedisTopic, redis_url: str
) -> None:
    ids = redis_topic.publish(_bodies(100))
    worker = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WORKER, redis_url],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()  # it read 30, acked 20 (trimmed), and holds 10 pending
        worker.send_signal(signal.SIGKILL)
    finally:
        if worker.poll() is None:
            worker.kill()
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL and line.split() == ["30", "80"], err
    # The worker's process is gone (same host): a new consumer takes its 10 over at once.
    helper = redis_topic.consumer("g", "helper", retention=EVERY_ACK)
    taken = _read_all(helper, 80)
    assert [m.id for m in taken] == ids[20:]
    assert [m.body for m in taken[:10]] == _bodies(100)[20:30]
    helper.ack([m.id for m in taken[10:]])
    assert helper.pending() == 10 and _xlen(redis_topic) == 80  # nothing after ids[20] may go
    helper.ack([m.id for m in taken[:10]])
    assert _xlen(redis_topic) == 0 and helper.backlog() == 0


def test_retain_all_keeps_every_entry_for_a_later_group(redis_topic: RedisTopic) -> None:
    ids = redis_topic.publish(_bodies(20))
    keeper = redis_topic.consumer("g", "c", retention=Retention(keep_all=True, every_messages=1))
    keeper.ack([m.id for m in _read_all(keeper, 20)])
    assert keeper.trim() == 0
    keeper.close()
    assert _xlen(redis_topic) == 20 and keeper.backlog() == 0
    replay = redis_topic.consumer("replay", "c", retention=Retention(keep_all=True))
    assert [m.id for m in _read_all(replay, 20)] == ids


def test_embedded_retain_all_keeps_acked_messages(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    topic = open_topic(url, "t")
    ids = topic.publish(_bodies(5))
    keeper = topic.consumer("g", "c", retention=Retention(keep_all=True))
    keeper.ack([m.id for m in keeper.read(10, timeout=1.0)])
    assert keeper.trim() == 0
    with sqlite3.connect(url) as con:
        assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == 5
    replay = topic.consumer("replay", "c")
    assert [m.id for m in replay.read(10, timeout=1.0)] == ids
    # A default consumer of the same queue deletes what every group has acked: both have.
    replay.ack(ids)
    with sqlite3.connect(url) as con:
        assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    topic.close()


def test_embedded_keeps_the_oldest_message_any_group_has_pending(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    topic = open_topic(url, "t")
    ids = topic.publish(_bodies(40))
    fast = topic.consumer("fast", "c")
    slow = topic.consumer("slow", "c")

    def left() -> int:
        with sqlite3.connect(url) as con:
            return int(con.execute("SELECT count(*) FROM messages").fetchone()[0])

    handed = _read_all(fast, 40)
    fast.ack([m.id for m in handed if m.id != ids[2]])  # the third is still pending in "fast"
    assert left() == 40  # "slow" was handed nothing yet
    slow.ack([m.id for m in slow.read(10, timeout=1.0)])
    assert left() == 38  # both acked ids[:10], but "fast" still needs ids[2]
    fast.ack([ids[2]])
    assert left() == 30  # every group acked ids[:10]; "slow" was not handed the rest
    topic.close()


def _source_spec(url: str, options: dict[str, Any]) -> Any:
    return parse_spec(
        {
            "source": {"kind": "topic", "url": url, "topic": "t", "options": options},
            "sink": {"kind": "jsonl", "path": "out.jsonl"},
            "batch": {"max_size": 4, "max_wait_ms": 20},
        },
        origin="s.yaml",
    )


@pytest.mark.parametrize(
    ("options", "during", "after"),
    [
        ({}, [10, 10, 10], 0),  # under 10,000 acks and 5 s: trimmed at close
        ({"trim_every": 4}, [6, 2, 2], 0),
        ({"retain": "all", "trim_every": 1}, [10, 10, 10], 10),
    ],
)
def test_topic_source_trims_per_its_options(
    redis_topic: RedisTopic, redis_url: str, options: dict[str, Any], during: list[int], after: int
) -> None:
    redis_topic.publish(_bodies(10))
    source = TopicSource(_source_spec(redis_url, options))
    source.bind(stop=threading.Event(), until_idle=0.2)
    source.open()
    lengths = []
    try:
        for batch in source.batches():
            source.ack(batch.position)
            lengths.append(_xlen(redis_topic))
    finally:
        source.close()
    assert lengths == during and _xlen(redis_topic) == after


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retain": "none"}, r"s.yaml: source.options.retain is 'none'; expected 'acked' .* or 'all'"),
        ({"trim_every": 0}, r"s.yaml: source.options.trim_every is 0; expected a whole number .* >= 1"),
        ({"trim_every": "often"}, r"source.options.trim_every is 'often'; expected a whole number"),
        ({"trim_every_seconds": -1}, r"source.options.trim_every_seconds is -1; expected a number"),
        ({"trim_every_seconds": True}, r"source.options.trim_every_seconds is True; expected"),
    ],
)
def test_bad_retention_options_are_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TopicSource(_source_spec("q.db", options))


def test_retention_options_are_read() -> None:
    assert retention({}, "s.yaml") == Retention()
    assert retention({"retain": "all", "trim_every": 50, "trim_every_seconds": 0}, "s") == Retention(
        keep_all=True, every_messages=50, every_seconds=0.0
    )
