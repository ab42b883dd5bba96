"""`TopicSource`: JSON messages from a topic, cut into micro-batches of Arrow rows.

A batch closes when it holds `batch.max_size` messages or `batch.max_wait_ms` after its
first message arrived, whichever comes first, so latency stays bounded at low rates and
batches stay large at high ones. A message that is not a JSON object, or whose fields do
not have the types the rest of the stream has, becomes a dead letter; the stream goes on.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from inferline.errors import SpecError
from inferline.io.base import DeadLetter, SourceBatch
from inferline.io.topics.base import (
    DEFAULT_CONSUMER,
    DEFAULT_GROUP,
    DEFAULT_LEASE_SECONDS,
    RETAIN_CHOICES,
    Consumer,
    Message,
    Retention,
    Topic,
    open_topic,
)
from inferline.pipeline import PipelineSpec

# How often a waiting source looks at its stop event.
_POLL_SECONDS = 0.1


class TopicSource:
    """Reads a topic as a consumer group member; `ack(position)` acks a committed batch.

    Example:
        >>> source = TopicSource(parse_spec({...}))  # doctest: +SKIP
        >>> source.bind(stop=threading.Event(), limit=1000, until_idle=2.0)  # doctest: +SKIP
    """

    bounded = False

    def __init__(self, spec: PipelineSpec) -> None:
        src = spec.source
        url = src.url or src.path
        if not url:
            raise SpecError(
                f"{spec.origin}: source kind 'topic' needs url: (redis://host:port/db or a queue file "
                "such as queue.db)"
            )
        if not src.topic:
            raise SpecError(f"{spec.origin}: source kind 'topic' needs topic: (the topic name)")
        self.url = url
        self.topic_name = src.topic
        self.group = src.group or DEFAULT_GROUP
        self.consumer_name = str(src.options.get("consumer", DEFAULT_CONSUMER))
        self.lease_seconds = float(src.options.get("lease_seconds", DEFAULT_LEASE_SECONDS))
        self.retention = retention(src.options, spec.origin)
        self.load = src.load
        self.max_size = spec.batch.max_size
        self.max_wait = spec.batch.max_wait_ms / 1000.0
        self.stop = threading.Event()
        self.limit: int | None = None
        self.until_idle: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.broker_timeout: float | None = None
        self._topic: Topic | None = None
        self._consumer: Consumer | None = None
        self._schema: pa.Schema | None = None

    def bind(
        self,
        *,
        stop: threading.Event,
        limit: int | None = None,
        until_idle: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        broker_timeout: float | None = None,
    ) -> None:
        """Run until `stop` is set, `limit` messages were read, or nothing came for `until_idle` s.

        `broker_timeout`: seconds to keep reconnecting to a broker that went away (default 5 min).
        """
        self.stop, self.limit, self.until_idle, self.clock = stop, limit, until_idle, clock
        self.broker_timeout = broker_timeout

    def describe(self) -> str:
        return f"topic {self.topic_name} at {self.url}"

    def open(self) -> None:
        self._topic = open_topic(self.url, self.topic_name, broker_timeout=self.broker_timeout)
        self._consumer = self._topic.consumer(
            self.group, self.consumer_name, lease_seconds=self.lease_seconds, retention=self.retention
        )

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("TopicSource used before open()")
        return self._consumer

    def total_bytes(self) -> int | None:
        return None

    def backlog(self) -> int:
        return self.consumer.backlog()

    def batches(self) -> Iterator[SourceBatch]:
        remaining = self.limit
        idle_since = self.clock()
        while not self.stop.is_set():
            want = self.max_size if remaining is None else min(self.max_size, remaining)
            if want <= 0:
                return
            messages = self.consumer.read(want, timeout=_POLL_SECONDS)
            if not messages:
                if self.until_idle is not None and self.clock() - idle_since >= self.until_idle:
                    return
                continue
            deadline = self.clock() + self.max_wait
            while len(messages) < want and not self.stop.is_set():
                left = deadline - self.clock()
                if left <= 0:
                    break
                messages.extend(self.consumer.read(want - len(messages), timeout=min(left, _POLL_SECONDS)))
            yield self.decode(messages)
            if remaining is not None:
                remaining -= len(messages)
            idle_since = self.clock()

    def ack(self, position: list[str] | None) -> None:
        if position:
            self.consumer.ack(position)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._topic is not None:
            self._topic.close()
            self._topic = None

    # --- decoding ---------------------------------------------------------------------
    def decode(self, messages: list[Message]) -> SourceBatch:
        """Messages -> one Arrow batch (keys: message ids); bad messages -> dead letters."""
        bodies = [_one_line(m.body) for m in messages]
        if self.load is not None:
            bodies = [_as_file_message(b) for b in bodies]
        table = self._parse(bodies, self._schema)
        dead: list[DeadLetter] = []
        good = messages
        if table is None or table.num_rows != len(messages):
            table, good, dead = self._parse_one_by_one(messages, bodies)
        if self._schema is None and table.num_rows:
            self._schema = table.schema
        data = table.combine_chunks().to_batches()[0] if table.num_rows else _empty(table.schema)
        return SourceBatch(
            data=data,
            keys=pa.array([m.id for m in good], type=pa.string()),
            dead=dead,
            position=[m.id for m in messages],
            published_at=[m.published_at for m in good],
        )

    def _parse(self, bodies: list[bytes], schema: pa.Schema | None) -> pa.Table | None:
        # Once the stream's schema is known, it is explicit: 5 parses as 5.0 in a double field.
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
        try:
            return pa_json.read_json(io.BytesIO(b"\n".join(bodies)), parse_options=options)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None

    def _parse_one_by_one(
        self, messages: list[Message], bodies: list[bytes]
    ) -> tuple[pa.Table, list[Message], list[DeadLetter]]:
        # The rare path: some message is poison. Find which, keep the others.
        dead: list[DeadLetter] = []
        parsed: list[tuple[Message, bytes, pa.Table]] = []
        for message, body in zip(messages, bodies, strict=True):
            try:
                value = json.loads(body)
                if not isinstance(value, dict):
                    raise ValueError(f"expected a JSON object, got {type(value).__name__}")
                one = self._parse([body], self._schema)
                if one is None and self._schema is not None:
                    # Maybe only wider numbers (1.5 where the stream so far had 1).
                    one = self._parse([body], None)
                    if one is not None and _shape(one.schema) != _shape(self._schema):
                        one = None
                if one is None or one.num_rows != 1:
                    raise ValueError(f"fields do not match the stream's schema ({_describe(self._schema)})")
                parsed.append((message, body, one))
            except ValueError as exc:
                dead.append(self._dead(message, f"not a usable JSON message: {exc}"))
        if self._schema is None and parsed:
            # No schema learnt yet: the most common shape in this batch is the stream's.
            shapes = Counter(_shape(t.schema) for _, _, t in parsed)
            usual = shapes.most_common(1)[0][0]
            for message, _, one in parsed:
                if _shape(one.schema) != usual:
                    dead.append(
                        self._dead(
                            message, f"fields differ from the other messages ({_describe(one.schema)})"
                        )
                    )
            parsed = [p for p in parsed if _shape(p[2].schema) == usual]
        good = [m for m, _, _ in parsed]
        bodies = [b for _, b, _ in parsed]
        table = self._parse(bodies, self._schema) if parsed else None
        if table is None and parsed:
            table = self._parse(bodies, None)
            if table is not None and self._schema is not None:
                self._schema = table.schema  # widened numbers
        if table is None or table.num_rows != len(good):
            for message in good:
                dead.append(self._dead(message, "fields differ from the other messages in its batch"))
            good, table = [], pa.table({})
        return table, good, dead

    def _dead(self, message: Message, error: str) -> DeadLetter:
        return DeadLetter(
            key=message.id,
            raw=message.body.decode("utf-8", errors="replace"),
            error=f"topic {self.topic_name} message {message.id}: {error}".splitlines()[0],
            stage="parse",
        )


def retention(options: dict[str, Any], origin: str) -> Retention:
    """`source.options` `retain:` (acked | all), `trim_every:` (messages), `trim_every_seconds:`.

    Example:
        >>> retention({"retain": "all"}, "stream.yaml").keep_all
        True
    """
    retain = options.get("retain", "acked")
    if retain not in RETAIN_CHOICES:
        raise SpecError(
            f"{origin}: source.options.retain is {retain!r}; expected 'acked' (drop messages every "
            "consumer group has acked, the default) or 'all' (keep every message for replay)"
        )
    default = Retention()
    every = options.get("trim_every", default.every_messages)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise SpecError(
            f"{origin}: source.options.trim_every is {every!r}; expected a whole number of acked "
            f"messages >= 1 between trims (default {default.every_messages})"
        )
    seconds = options.get("trim_every_seconds", default.every_seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise SpecError(
            f"{origin}: source.options.trim_every_seconds is {seconds!r}; expected a number of "
            f"seconds >= 0 between trims (default {default.every_seconds:g})"
        )
    return Retention(keep_all=retain == "all", every_messages=every, every_seconds=float(seconds))


def _one_line(body: bytes) -> bytes:
    # Messages are joined by newlines for one vectorised parse; re-encode pretty-printed ones.
    if b"\n" not in body and b"\r" not in body:
        return body if body.strip() else b"null"
    try:
        return json.dumps(json.loads(body)).encode()
    except ValueError:
        return body.replace(b"\r", b" ").replace(b"\n", b" ")


def _as_file_message(body: bytes) -> bytes:
    # With `load:`, a message may be just the file's path, bare or as a JSON string.
    text = body.strip()
    if text.startswith(b"{"):
        return body
    try:
        value = json.loads(text)
    except ValueError:
        value = text.decode("utf-8", errors="replace")
    return json.dumps({"uri": value}).encode() if isinstance(value, str) else body


def _shape(schema: pa.Schema) -> str:
    # Integers and floats are the same shape: JSON writes 5.0 as 5 in some encoders.
    return str(schema).replace("int64", "double")


def _describe(schema: pa.Schema | None) -> str:
    if schema is None:
        return "unknown"
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
