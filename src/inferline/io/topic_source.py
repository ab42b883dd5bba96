"""`TopicSource`: JSON messages from a topic, cut into micro-batches of Arrow rows.

A batch closes when it holds `batch.max_size` messages or `batch.max_wait_ms` after its
first message arrived, whichever comes first, so latency stays bounded at low rates and
batches stay large at high ones. A message that is not a JSON object, or whose fields do
not have the types the rest of the stream has, becomes a dead letter; the stream goes on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from inferline.errors import SpecError
from inferline.io.base import DeadLetter, SourceBatch
from inferline.io.json_messages import DEFAULT_MAX_MESSAGE_BYTES, JsonMessages
from inferline.io.topics.base import (
    DEFAULT_GROUP,
    DEFAULT_LEASE_SECONDS,
    RETAIN_CHOICES,
    Consumer,
    Message,
    Retention,
    Topic,
    open_topic,
)
from inferline.io.topics.owners import default_consumer_name
from inferline.pipeline import PipelineSpec

# How often a waiting source looks at its stop event.
_POLL_SECONDS = 0.1
# A message delivered this often without being committed is dead-lettered (it keeps
# crashing or stalling the consumer); from its third delivery on it is read alone, with
# nothing else in flight.
DEFAULT_MAX_DELIVERIES = 5
_SUSPECT_DELIVERIES = 3


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
        self.consumer_name = str(src.options.get("consumer") or default_consumer_name())
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
        # Batches handed out and not acked yet (the engine acks each once it is committed).
        self._unacked = 0
        self._settled = threading.Condition()
        # Set while the reader waits for every batch to be acked (a suspect message is next):
        # an engine that holds acks back (part-file sinks) commits now.
        self.settling = threading.Event()
        self.max_deliveries = _whole(src.options, "max_deliveries", DEFAULT_MAX_DELIVERIES, spec.origin)
        max_bytes = _whole(src.options, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, spec.origin)
        self._messages = JsonMessages(key=spec.key, inputs=_message_inputs(spec), max_bytes=max_bytes)

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

    def progress_total(self) -> int | None:
        return None

    def backlog(self) -> int:
        return self.consumer.backlog()

    def batches(self) -> Iterator[SourceBatch]:
        remaining = self.limit
        idle_since = self.clock()
        # Reading delivers: a message that crashes the process would take a delivery from
        # every message read with it. So a run starts with a read of one, and reads one at a
        # time while the messages are suspects (delivered 3+ times), until a usual one comes.
        one_by_one = True
        while not self.stop.is_set():
            want = self.max_size if remaining is None else min(self.max_size, remaining)
            if want <= 0:
                return
            messages = self.consumer.read(1 if one_by_one else want, timeout=_POLL_SECONDS)
            if not messages:
                if self.until_idle is not None and self.clock() - idle_since >= self.until_idle:
                    return
                continue
            one_by_one = any(m.deliveries >= _SUSPECT_DELIVERIES for m in messages)
            deadline = self.clock() + self.max_wait
            while len(messages) < want and not one_by_one and not self.stop.is_set():
                left = deadline - self.clock()
                if left <= 0:
                    break
                messages.extend(self.consumer.read(want - len(messages), timeout=min(left, _POLL_SECONDS)))
            for batch, suspect in self._batches_of(messages):
                if suspect:
                    # A message that may crash the process goes alone: what was read before it
                    # is committed first, and nothing is read after it until it is committed,
                    # so a crash costs a delivery to it alone, not to its neighbours.
                    self._wait_settled()
                with self._settled:
                    self._unacked += 1
                yield batch
                if suspect:
                    self._wait_settled()
            if remaining is not None:
                remaining -= len(messages)
            idle_since = self.clock()

    def _wait_settled(self) -> None:
        with self._settled:
            self.settling.set()
            try:
                while self._unacked > 0 and not self.stop.is_set():
                    self._settled.wait(_POLL_SECONDS)
            finally:
                self.settling.clear()

    def _batches_of(self, messages: list[Message]) -> Iterator[tuple[SourceBatch, bool]]:
        # A message the consumer has failed to commit twice is read alone (True: a suspect),
        # so a message that crashes it costs only itself; past `max_deliveries` it is
        # dead-lettered unread.
        usual = [
            m for m in messages if m.deliveries < _SUSPECT_DELIVERIES or m.deliveries > self.max_deliveries
        ]
        if usual:
            batch = self.decode([m for m in usual if m.deliveries <= self.max_deliveries])
            for message in usual:
                if message.deliveries > self.max_deliveries:
                    batch.dead.append(
                        self._dead(
                            message,
                            f"delivered {message.deliveries} times and never committed (it crashed or "
                            f"stalled the consumer each time); over source.options.max_deliveries "
                            f"({self.max_deliveries})",
                        )
                    )
                    batch.position.append(message.id)
            yield batch, False
        for message in messages:
            if _SUSPECT_DELIVERIES <= message.deliveries <= self.max_deliveries:
                yield self.decode([message]), True

    def ack(self, position: list[str] | None) -> None:
        """Ack a batch `batches()` handed out, once it is committed (every batch, even empty)."""
        if position:
            self.consumer.ack(position)
        with self._settled:
            self._unacked = max(self._unacked - 1, 0)
            self._settled.notify_all()

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
        decoded = self._messages.decode(bodies)
        dead = [self._dead(messages[i], error) for i, error in sorted(decoded.errors.items())]
        good = [messages[i] for i in decoded.good]
        table = decoded.table
        data = table.combine_chunks().to_batches()[0] if table.num_rows else _empty(table.schema)
        return SourceBatch(
            data=data,
            keys=pa.array([m.id for m in good], type=pa.string()),
            dead=dead,
            position=[m.id for m in messages],
            published_at=[m.published_at for m in good],
        )

    def _dead(self, message: Message, error: str) -> DeadLetter:
        body = message.body
        if len(body) > self._messages.max_bytes:  # keep the dead-letter table small
            body = body[:1024] + f"... ({len(body):,} bytes)".encode()
        return DeadLetter(
            key=message.id,
            raw=body.decode("utf-8", errors="replace"),
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


def _whole(options: dict[str, Any], name: str, default: int, origin: str) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(
            f"{origin}: source.options.{name} is {value!r}; expected a whole number >= 1 "
            f"(default {default:,})"
        )
    return value


def _message_inputs(spec: PipelineSpec) -> list[str]:
    # Model inputs that are message fields as they are (not made by `load:` or `steps:`).
    if spec.steps or spec.source.load is not None:
        return []
    return [c for m in spec.all_models for c in m.input_columns if c.isidentifier()]


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


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
