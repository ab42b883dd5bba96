"""`TopicSink`: result rows published as JSON messages to another topic.

Rows are buffered by `write()` and published by `commit()`, so they go out only once the
batch is complete. Delivery is at-least-once: after a crash, the rows of the batch in
flight may be published again; consumers dedupe on the `key` field.
"""

from __future__ import annotations

import json

import pyarrow as pa

from inferline.errors import SpecError
from inferline.io.topics.base import Topic, open_topic
from inferline.pipeline import SinkSpec


class TopicSink:
    """Publishes each result row as one JSON object.

    Example:
        >>> sink = TopicSink(SinkSpec(kind="topic", url="queue.db", topic="iris-predictions"))
    """

    def __init__(self, spec: SinkSpec) -> None:
        url = spec.url or spec.path
        if not url or not spec.topic:
            raise SpecError("sink kind 'topic' needs url: (redis://host:port/db or a queue file) and topic:")
        self.url = url
        self.topic_name = spec.topic
        self._topic: Topic | None = None
        self._buffer: list[bytes] = []

    def describe(self) -> str:
        return f"topic {self.topic_name} at {self.url}"

    def open(self) -> None:
        self._topic = open_topic(self.url, self.topic_name)

    def write(self, batch: pa.RecordBatch) -> None:
        self._buffer.extend(json.dumps(row, default=str).encode() for row in batch.to_pylist())

    def commit(self) -> None:
        if self._buffer and self._topic is not None:
            self._topic.publish(self._buffer)
        self._buffer = []

    def close(self) -> None:
        self._buffer = []
        if self._topic is not None:
            self._topic.close()
            self._topic = None
