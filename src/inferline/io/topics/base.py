"""The `Topic` and `Consumer` interfaces shared by the embedded queue and Redis Streams.

A topic is an append-only log of messages. Consumers in one group share the work: each
message is delivered to one consumer, stays *pending* until `ack()`ed, and is delivered
again if its consumer dies first (a crashed consumer's own pending messages come back as
soon as it restarts under the same name; another consumer reclaims them once their lease
expires). At-least-once delivery plus an idempotent sink gives exactly-once results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from inferline.errors import SpecError

DEFAULT_GROUP = "inferline"
DEFAULT_CONSUMER = "consumer-1"
# A message delivered but not acked for this long is handed to another consumer.
DEFAULT_LEASE_SECONDS = 60.0
RETAIN_CHOICES = ("acked", "all")


@dataclass(frozen=True)
class Retention:
    """What a consumer removes from its topic after acking, and how often it looks.

    `keep_all=False` (spec `retain: acked`, the default) drops the messages every consumer
    group of the topic has been handed and has acked; nothing a group has not acked yet
    (pending, or not delivered at all) ever goes. The check runs once `every_messages`
    messages were acked since the last one, or `every_seconds` after it if anything was.
    `keep_all=True` (`retain: all`) never removes anything, so a new group can replay it all.

    Example:
        >>> Retention(every_messages=1000).keep_all
        False
    """

    keep_all: bool = False
    every_messages: int = 10_000
    every_seconds: float = 5.0

    def due(self, acked_since: int, seconds_since: float) -> bool:
        """Whether a consumer that acked `acked_since` messages since its last trim trims now."""
        if self.keep_all or acked_since <= 0:
            return False
        return acked_since >= self.every_messages or seconds_since >= self.every_seconds


KEEP_ACKED = Retention()


@dataclass(frozen=True)
class Message:
    """One delivered message: its id (stable across redeliveries), body, publish time, and
    how many times it has been delivered (1 the first time; more after crashes)."""

    id: str
    body: bytes
    published_at: float  # seconds since the epoch (wall clock of the publisher or server)
    deliveries: int = 1


class Consumer(Protocol):
    """A member of a consumer group.

    Example:
        >>> consumer = topic.consumer("inferline", "worker-1")  # doctest: +SKIP
        >>> messages = consumer.read(100, timeout=0.5)  # doctest: +SKIP
        >>> consumer.ack([m.id for m in messages])  # doctest: +SKIP
    """

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `timeout` seconds for the first one."""
        ...

    def ack(self, ids: list[str]) -> None: ...

    def pending(self) -> int:
        """Messages of this group delivered but not yet acked (any consumer)."""
        ...

    def backlog(self) -> int:
        """Messages not yet delivered to this group plus those pending."""
        ...

    def trim(self) -> int:
        """Remove what every group of the topic has acked (unless `retain: all`); how many went."""
        ...

    def close(self) -> None: ...


class Topic(Protocol):
    """A named message log at a URL; `publish` appends, `consumer` reads in a group."""

    name: str
    url: str

    def open(self) -> None: ...

    def publish(self, bodies: list[bytes]) -> list[str]: ...

    def consumer(
        self,
        group: str,
        name: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention: Retention = KEEP_ACKED,
    ) -> Consumer: ...

    def close(self) -> None: ...


def open_topic(url: str, name: str, *, broker_timeout: float | None = None) -> Topic:
    """The topic `name` at `url`: `redis://host:port/db` or a path to an embedded queue file.

    `broker_timeout`: how long calls to a networked broker (Redis) keep retrying through an
    outage before failing (default 5 minutes).

    Example:
        >>> topic = open_topic("queue.db", "iris")  # doctest: +SKIP
        >>> topic.open(); topic.publish([b'{"id": 1}'])  # doctest: +SKIP
    """
    if not name:
        raise SpecError(f"topic at {url}: no topic name given; set source.topic (e.g. topic: iris)")
    if url.startswith(("redis://", "rediss://", "unix://")):
        from inferline.io.topics.reconnect import DEFAULT_BROKER_TIMEOUT
        from inferline.io.topics.redis import RedisTopic

        timeout = DEFAULT_BROKER_TIMEOUT if broker_timeout is None else broker_timeout
        topic: Topic = RedisTopic(url, name, broker_timeout=timeout)
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise SpecError(
            f"topic url {url!r}: unsupported scheme {scheme!r}; use redis://host:port/db "
            "or a file path for the embedded queue (e.g. queue.db)"
        )
    else:
        from inferline.io.topics.embedded import EmbeddedTopic

        topic = EmbeddedTopic(url, name)
    topic.open()
    return topic
