"""Both topic backends against the same expectations: delivery, ack, redelivery, backlog."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferline.errors import InputError, SpecError
from inferline.io.topics import Topic, open_topic
from inferline.io.topics.embedded import EmbeddedTopic


@pytest.fixture(params=["embedded", "redis"])
def topic(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Topic]:
    url = str(tmp_path / "queue.db") if request.param == "embedded" else request.getfixturevalue("redis_url")
    opened = open_topic(url, "iris")
    try:
        yield opened
    finally:
        opened.close()


def test_publish_read_ack(topic: Topic) -> None:
    ids = topic.publish([b'{"id": 1}', b'{"id": 2}', b'{"id": 3}'])
    assert len(set(ids)) == 3
    consumer = topic.consumer("g", "c1")
    first = consumer.read(2, timeout=1.0)
    assert [m.id for m in first] == ids[:2]
    assert [m.body for m in first] == [b'{"id": 1}', b'{"id": 2}']
    assert all(m.published_at > 1.6e9 for m in first)
    assert consumer.pending() == 2 and consumer.backlog() == 3
    consumer.ack([m.id for m in first])
    assert consumer.pending() == 0 and consumer.backlog() == 1
    rest = consumer.read(10, timeout=1.0)
    assert [m.id for m in rest] == ids[2:]
    consumer.ack([ids[2]])
    assert consumer.read(10, timeout=0.05) == []
    assert consumer.backlog() == 0


def test_a_restarted_consumer_gets_its_unacked_messages_again(topic: Topic) -> None:
    ids = topic.publish([b"a", b"b", b"c"])
    crashed = topic.consumer("g", "c1")
    assert len(crashed.read(2, timeout=1.0)) == 2  # never acked: the process "died"
    restarted = topic.consumer("g", "c1")
    again = [m.id for m in restarted.read(10, timeout=1.0)]
    assert again[:2] == ids[:2]
    again += [m.id for m in restarted.read(10, timeout=0.2)]
    assert again == ids
    restarted.ack(ids)
    assert restarted.pending() == 0


def test_another_consumer_reclaims_after_the_lease(topic: Topic) -> None:
    ids = topic.publish([b"a", b"b"])
    gone = topic.consumer("g", "c1", lease_seconds=0.05)
    assert len(gone.read(10, timeout=1.0)) == 2
    other = topic.consumer("g", "c2", lease_seconds=0.05)
    got: list[str] = []
    for _ in range(50):
        got += [m.id for m in other.read(10, timeout=0.05)]
        if len(got) == 2:
            break
    assert sorted(got) == sorted(ids)


def test_groups_each_see_every_message(topic: Topic) -> None:
    topic.publish([b"a", b"b"])
    one, two = topic.consumer("g1", "c"), topic.consumer("g2", "c")
    assert len(one.read(10, timeout=1.0)) == 2
    assert len(two.read(10, timeout=1.0)) == 2


def test_read_waits_for_a_message_published_meanwhile(topic: Topic) -> None:
    consumer = topic.consumer("g", "c1")
    timer = threading.Timer(0.1, lambda: topic.publish([b"late"]))
    timer.start()
    try:
        got = consumer.read(10, timeout=5.0)
    finally:
        timer.join()
    assert [m.body for m in got] == [b"late"]


def test_embedded_publishers_on_threads_get_distinct_ids(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    ids: list[str] = []
    lock = threading.Lock()

    def publish(n: int) -> None:
        topic = EmbeddedTopic(url, "t")
        topic.open()
        for _ in range(20):
            got = topic.publish([f"{n}".encode()] * 10)
            with lock:
                ids.extend(got)
        topic.close()

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == len(set(ids)) == 800


def test_unknown_scheme_is_an_error() -> None:
    with pytest.raises(
        SpecError, match=r"topic url 'kafka://x:9092': unsupported scheme 'kafka'; use redis://"
    ):
        open_topic("kafka://x:9092", "iris")


def test_missing_topic_name_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"topic at queue.db: no topic name given; set source.topic"):
        open_topic("queue.db", "")


def test_unreachable_redis_is_an_error() -> None:
    from tests.conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(
        InputError, match=r"topic iris: cannot reach Redis at redis://127.0.0.1:\d+/0 .*redis-server"
    ):
        open_topic(url, "iris")


def test_a_file_that_is_not_a_queue_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(InputError, match=r"queue .*notes.db: cannot open as an embedded queue"):
        open_topic(str(path), "iris")


def test_embedded_queue_deletes_what_every_group_acked(tmp_path: Path) -> None:
    import sqlite3

    url = str(tmp_path / "q.db")
    topic = open_topic(url, "t")
    one, two = topic.consumer("g1", "c"), topic.consumer("g2", "c")
    ids = topic.publish([b"a", b"b", b"c"])
    one.ack([m.id for m in one.read(10, timeout=1.0)])
    first = two.read(2, timeout=1.0)

    def left() -> int:
        with sqlite3.connect(url) as con:
            return int(con.execute("SELECT count(*) FROM messages").fetchone()[0])

    assert left() == 3  # g2 has not acked anything yet
    two.ack([m.id for m in first])
    assert left() == 1  # "c" is still to be handed to g2
    assert [m.id for m in two.read(10, timeout=1.0)] == ids[2:]
    two.ack(ids[2:])
    assert left() == 0 and one.backlog() == 0 and two.backlog() == 0
    topic.close()
