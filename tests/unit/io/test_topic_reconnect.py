"""Broker outages: calls are retried with capped backoff, a lost reply neither loses nor
duplicates a message, and publishing says how much got in before it gave up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from inferline.io.topics import open_topic, publish
from inferline.io.topics.reconnect import BrokerUnavailable, Reconnector
from inferline.io.topics.redis import RedisTopic
from tests.conftest import FakeClock


def _failing(times: int) -> Any:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise ConnectionError("Connection refused")
        return "ok"

    return fn, calls


def test_calls_are_retried_with_backoff_and_the_outage_logged_once(
    caplog: pytest.LogCaptureFixture, fake_clock: FakeClock
) -> None:
    reconnector = Reconnector(
        "Redis at r", errors=(ConnectionError,), clock=fake_clock, sleep=fake_clock.sleep
    )
    fn, calls = _failing(4)
    with caplog.at_level(logging.WARNING, logger="inferline.topics"):
        assert reconnector.call(fn) == "ok"
    assert calls[0] == 5 and fake_clock.sleeps == [0.1, 0.2, 0.4, 0.8]
    assert [r.getMessage() for r in caplog.records] == [
        "Redis at r: connection lost (Connection refused); reconnecting for up to 300 s",
        "Redis at r: connection back after 1.5 s",
    ]
    assert reconnector.recoveries == 1
    assert reconnector.call(lambda: 1) == 1 and reconnector.recoveries == 1


def test_backoff_is_capped_and_a_long_outage_gives_up_in_one_line(fake_clock: FakeClock) -> None:
    reconnector = Reconnector(
        "Redis at r", errors=(ConnectionError,), timeout=30, clock=fake_clock, sleep=fake_clock.sleep
    )
    fn, _ = _failing(10**6)
    with pytest.raises(BrokerUnavailable) as caught:
        reconnector.call(fn)
    assert max(fake_clock.sleeps) == 5.0 and fake_clock.now == 30
    assert str(caught.value) == (
        "Redis at r: no connection for 30 s (Connection refused); giving up (--broker-timeout 30)"
    )


@pytest.fixture
def redis_topic(redis_url: str) -> Iterator[RedisTopic]:
    topic = open_topic(redis_url, "t")
    assert isinstance(topic, RedisTopic)
    try:
        yield topic
    finally:
        topic.close()


def test_a_chunk_whose_reply_was_lost_is_not_published_twice(
    redis_topic: RedisTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_topic.publish([b'{"id": 0}'])
    real = redis_topic.client.pipeline
    lost = [0]

    def pipeline(**options: Any) -> Any:
        pipe = real(**options)
        execute = pipe.execute

        def execute_then_lose_the_reply() -> Any:
            result = execute()
            if not lost[0]:
                lost[0] += 1
                raise redis.ConnectionError("Connection closed by server.")
            return result

        pipe.execute = execute_then_lose_the_reply
        return pipe

    monkeypatch.setattr(redis_topic.client, "pipeline", pipeline)
    ids = redis_topic.publish([b'{"id": 1}', b'{"id": 2}', b'{"id": 3}'])
    assert lost[0] == 1
    entries = redis_topic.client.xrange("t")
    assert [e[1][b"b"] for e in entries] == [b'{"id": 0}', b'{"id": 1}', b'{"id": 2}', b'{"id": 3}']
    assert ids == [e[0].decode() for e in entries[1:]]


def test_after_a_reconnection_entries_of_a_lost_reply_come_back_but_not_those_in_flight(
    redis_topic: RedisTopic,
) -> None:
    redis_topic.publish([f'{{"id": {i}}}'.encode() for i in range(5)])
    consumer = redis_topic.consumer("g", "c1")
    in_flight = consumer.read(2, timeout=0.1)
    # An XREADGROUP that Redis answered but whose reply never arrived: 2 more pending on c1.
    redis_topic.client.xreadgroup("g", "c1", {"t": ">"}, count=2)
    redis_topic.reconnector.recoveries += 1
    again = consumer.read(10, timeout=0.1)
    assert [m.body for m in in_flight] == [b'{"id": 0}', b'{"id": 1}']
    assert [m.body for m in again] == [b'{"id": 2}', b'{"id": 3}']
    assert [m.body for m in consumer.read(10, timeout=0.1)] == [b'{"id": 4}']


class _DyingTopic:
    url = "redis://example:6379/0"

    def __init__(self) -> None:
        self.chunks = 0

    def publish(self, bodies: list[bytes]) -> list[str]:
        self.chunks += 1
        if self.chunks == 3:
            raise BrokerUnavailable("topic t: Redis at r: no connection for 300 s (refused); giving up")
        return [str(i) for i in range(len(bodies))]

    def close(self) -> None:
        pass


def test_publish_says_how_many_messages_got_in_before_giving_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "open_topic", lambda url, name, broker_timeout=None: _DyingTopic())
    with pytest.raises(BrokerUnavailable) as caught:
        publish.publish("t", ({"id": i} for i in range(5_000)), url="redis://example:6379/0")
    assert caught.value.accepted == 2_000
    assert str(caught.value).endswith("giving up; 2,000 messages were accepted before the failure")
