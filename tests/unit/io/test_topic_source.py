"""`TopicSource`: micro-batches, JSON decoding, poison messages, limits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from inferline.errors import SpecError
from inferline.io.base import SourceBatch
from inferline.io.topic_source import TopicSource
from inferline.io.topics import open_topic
from inferline.pipeline import PipelineSpec, parse_spec


def _spec(url: str, *, max_size: int = 4, max_wait_ms: float = 50) -> PipelineSpec:
    return parse_spec(
        {
            "source": {"kind": "topic", "url": url, "topic": "t"},
            "sink": {"kind": "jsonl", "path": "out.jsonl"},
            "batch": {"max_size": max_size, "max_wait_ms": max_wait_ms},
        },
        origin="s.yaml",
    )


def _publish(url: str, bodies: list[bytes]) -> list[str]:
    topic = open_topic(url, "t")
    try:
        return topic.publish(bodies)
    finally:
        topic.close()


def test_batches_of_max_size_until_idle(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    ids = _publish(url, [f'{{"id": {i}, "m": {{"v": [{i}, 1.5]}}}}'.encode() for i in range(10)])
    source = TopicSource(_spec(url))
    source.bind(stop=threading.Event(), until_idle=0.2)
    source.open()
    try:
        batches = list(source.batches())
    finally:
        source.close()
    assert [b.data.num_rows for b in batches] == [4, 4, 2]
    assert [k for b in batches for k in b.keys.to_pylist()] == ids
    assert batches[0].position == ids[:4]
    assert batches[0].data.schema.field("m").type == pa.struct([("v", pa.list_(pa.float64()))])
    assert batches[0].published_at is not None and len(batches[0].published_at) == 4


def test_limit_reads_no_more_than_asked(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    _publish(url, [b'{"id": 1}'] * 10)
    source = TopicSource(_spec(url))
    source.bind(stop=threading.Event(), limit=5)
    source.open()
    try:
        assert [b.data.num_rows for b in source.batches()] == [4, 1]
        assert source.consumer.pending() == 5  # read, not acked
        assert source.backlog() == 10
    finally:
        source.close()


def test_a_set_stop_event_ends_the_stream(tmp_path: Path) -> None:
    stop = threading.Event()
    source = TopicSource(_spec(str(tmp_path / "q.db")))
    source.bind(stop=stop)
    source.open()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        assert list(source.batches()) == []
    finally:
        timer.join()
        source.close()


def test_poison_messages_become_dead_letters(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    good = b'{"id": 1, "feature": [5.1, 3.5, 1.4, 0.2]}'
    bodies = [
        good,
        b"not json",
        b"[1, 2]",
        b"",
        b'{"id": 2, "feature": "oops"}',
        good,
        b'{\n "id": 3,\n "feature": [1.0, 2.0, 3.0, 4.0]\n}',
    ]
    ids = _publish(url, bodies)
    source = TopicSource(_spec(url, max_size=100))
    source.bind(stop=threading.Event(), until_idle=0.1)
    source.open()
    try:
        (batch,) = list(source.batches())
    finally:
        source.close()
    assert batch.keys.to_pylist() == [ids[0], ids[5], ids[6]]
    assert batch.data.column("id").to_pylist() == [1, 1, 3]
    assert batch.position == ids
    errors = {d.key: d.error for d in batch.dead}
    assert sorted(errors) == sorted([ids[1], ids[2], ids[3], ids[4]])
    assert errors[ids[1]].startswith(f"topic t message {ids[1]}: not a usable JSON message: Expecting value")
    assert errors[ids[2]].endswith("expected a JSON object, got list")
    assert errors[ids[4]].endswith("field 'feature' is text, where the stream has list of numbers")
    assert {d.raw for d in batch.dead} == {"not json", "[1, 2]", "", '{"id": 2, "feature": "oops"}'}


def test_after_the_first_batch_messages_must_fit_the_stream_schema(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    _publish(url, [b'{"id": 1, "feature": [1.0, 2.0]}'])
    source = TopicSource(_spec(url, max_size=1))
    source.bind(stop=threading.Event(), until_idle=0.1)
    source.open()
    try:
        first = next(iter(source.batches()))
        assert first.data.num_rows == 1
        _publish(url, [b'{"id": 2, "feature": {"a": 1}}'])
        (second,) = list(source.batches())
    finally:
        source.close()
    assert second.data.num_rows == 0
    assert second.dead[0].error.endswith("field 'feature' is an object, where the stream has list of numbers")


def test_topic_source_needs_url_and_topic() -> None:
    spec = parse_spec(
        {"source": {"kind": "topic", "topic": "t"}, "sink": {"kind": "jsonl", "path": "o"}}, origin="s.yaml"
    )
    with pytest.raises(
        SpecError, match=r"s.yaml: source kind 'topic' needs url: \(redis://host:port/db or a queue"
    ):
        TopicSource(spec)
    spec = parse_spec(
        {"source": {"kind": "topic", "url": "q.db"}, "sink": {"kind": "jsonl", "path": "o"}}, origin="s.yaml"
    )
    with pytest.raises(SpecError, match=r"s.yaml: source kind 'topic' needs topic: \(the topic name\)"):
        TopicSource(spec)


def test_wider_numbers_later_in_the_stream_are_fine(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    _publish(url, [b'{"id": 1, "feature": [1, 2]}'])
    source = TopicSource(_spec(url, max_size=1))
    source.bind(stop=threading.Event(), until_idle=0.1)
    source.open()
    try:
        assert next(iter(source.batches())).data.num_rows == 1
        _publish(url, [b'{"id": 2, "feature": [1.5, 2]}'])
        (second,) = list(source.batches())
    finally:
        source.close()
    assert second.dead == []
    assert second.data.column("feature").to_pylist() == [[1.5, 2.0]]


def test_a_batch_closes_max_wait_after_its_first_message(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    _publish(url, [b'{"id": 1}'] * 3)
    source = TopicSource(_spec(url, max_size=1000, max_wait_ms=100))
    source.bind(stop=threading.Event(), until_idle=1.0)
    source.open()
    late = threading.Timer(0.6, lambda: _publish(url, [b'{"id": 2}'] * 2))
    late.start()
    try:
        sizes = [b.data.num_rows for b in source.batches()]
    finally:
        late.join()
        source.close()
    assert sizes == [3, 2]


def _read_without_acking(url: str, times: int) -> None:
    # A consumer that dies before committing, `times` times over.
    for _ in range(times):
        topic = open_topic(url, "t")
        consumer = topic.consumer("inferline", "consumer-1")
        assert consumer.read(100, timeout=1.0)
        consumer.close()
        topic.close()


def _all_batches(url: str, **options: object) -> list[SourceBatch]:
    spec = _spec(url, max_size=100)
    spec.source.options.update({"consumer": "consumer-1", **options})
    source = TopicSource(spec)
    source.bind(stop=threading.Event(), until_idle=0.1)
    source.open()
    batches = []
    try:
        for batch in source.batches():
            batches.append(batch)
            source.ack(batch.position)  # as the engine does once a batch is committed
        return batches
    finally:
        source.close()


def test_messages_redelivered_after_two_failed_attempts_are_read_one_by_one(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    _publish(url, [b'{"id": 1}', b'{"id": 2}', b'{"id": 3}'])
    _read_without_acking(url, 2)
    batches = _all_batches(url)
    assert [b.data.column("id").to_pylist() for b in batches] == [[1], [2], [3]]
    assert all(b.dead == [] for b in batches)


def test_a_message_that_keeps_crashing_the_consumer_is_dead_lettered(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    ids = _publish(url, [b'{"id": 1}', b'{"id": 2}'])
    _read_without_acking(url, 3)
    batches = _all_batches(url, max_deliveries=3)
    assert [b.position for b in batches] == [[i] for i in ids]  # suspects are read one at a time
    assert all(b.data.num_rows == 0 for b in batches)
    assert [d.key for b in batches for d in b.dead] == ids
    assert batches[0].dead[0].error == (
        f"topic t message {ids[0]}: delivered 4 times and never committed (it crashed or stalled "
        "the consumer each time); over source.options.max_deliveries (3)"
    )


def test_a_suspect_is_read_alone_so_a_crash_on_it_costs_its_neighbours_no_delivery(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    ids = _publish(url, [b'{"id": 1}', b'{"id": 2}', b'{"id": 3}'])
    _read_without_acking(url, 2)
    spec = _spec(url, max_size=100)
    spec.source.options.update({"consumer": "consumer-1", "max_deliveries": 3})
    source = TopicSource(spec)
    source.bind(stop=threading.Event(), until_idle=0.1)
    source.open()
    first = next(source.batches())  # its 3rd delivery: alone, and nothing else was read
    assert first.position == [ids[0]]
    source.close()  # the process dies on it, acking nothing
    batches = _all_batches(url, max_deliveries=3)
    assert [b.position for b in batches] == [[i] for i in ids]
    assert [d.key for d in batches[0].dead] == [ids[0]]  # its 4th delivery: over the limit
    assert [b.data.column("id").to_pylist() for b in batches[1:]] == [[2], [3]]  # their 3rd


def test_a_message_over_the_size_limit_is_dead_lettered_and_a_big_one_under_it_works(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    big = json.dumps({"id": 1, "feature": [0.5] * 600_000}).encode()  # ~3 MB
    _publish(url, [big, b'{"id": 2, "feature": [1.0]}'])
    (batch,) = _all_batches(url)
    assert batch.data.column("id").to_pylist() == [1, 2]
    assert len(batch.data.column("feature")[0]) == 600_000
    assert batch.dead == []
    url = str(tmp_path / "q2.db")
    ids = _publish(url, [b'{"id": 1}', b'{"id": 2, "pad": "' + b"x" * 5000 + b'"}'])
    (batch,) = _all_batches(url, max_message_bytes=1000)
    assert batch.data.column("id").to_pylist() == [1]
    assert batch.dead[0].key == ids[1]
    assert batch.dead[0].error.endswith(
        "message is 5,020 bytes, over the limit of 1,000 (source.options.max_message_bytes)"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_deliveries": 0}, "s.yaml: source.options.max_deliveries is 0; expected a whole number >= 1"),
        ({"max_message_bytes": "1MB"}, "s.yaml: source.options.max_message_bytes is '1MB'; expected a whole"),
    ],
)
def test_bad_limits_are_spec_errors(options: dict[str, object], message: str) -> None:
    spec = _spec("q.db")
    spec.source.options.update(options)
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        TopicSource(spec)
