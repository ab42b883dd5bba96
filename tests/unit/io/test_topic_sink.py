"""`TopicSink`: rows go out as JSON messages on commit, not before."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from inferline.errors import SpecError
from inferline.io.topic_sink import TopicSink
from inferline.io.topics import open_topic
from inferline.pipeline import SinkSpec


def test_rows_are_published_on_commit(tmp_path: Path) -> None:
    url = str(tmp_path / "q.db")
    sink = TopicSink(SinkSpec(kind="topic", url=url, topic="out"))
    sink.open()
    consumer = open_topic(url, "out").consumer("g", "c")
    sink.write(pa.RecordBatch.from_pydict({"key": ["a", "b"], "prediction": [1, 2]}))
    assert consumer.read(10, timeout=0.05) == []
    sink.commit()
    got = [json.loads(m.body) for m in consumer.read(10, timeout=1.0)]
    assert got == [{"key": "a", "prediction": 1}, {"key": "b", "prediction": 2}]
    assert sink.describe() == f"topic out at {url}"
    sink.close()


def test_topic_sink_needs_url_and_topic() -> None:
    with pytest.raises(
        SpecError, match=r"sink kind 'topic' needs url: \(redis://host:port/db or a queue file\) and topic:"
    ):
        TopicSink(SinkSpec(kind="topic", topic="out"))
