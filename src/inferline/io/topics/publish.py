"""`publish()`: put messages on a topic from Python (the CLI's `inferline publish` uses it)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from inferline.errors import InferlineError
from inferline.io.topics.base import open_topic
from inferline.io.topics.reconnect import BrokerUnavailable

DEFAULT_URL = "queue.db"
T = TypeVar("T")


def default_url() -> str:
    """`$INFERLINE_QUEUE_URL`, else the embedded queue `queue.db` in the current directory."""
    return os.environ.get("INFERLINE_QUEUE_URL") or DEFAULT_URL


def _encode(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    return json.dumps(message).encode("utf-8")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter): `chunks(range(5), 2)` -> [0, 1], [2, 3], [4]."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _accepted(count: int) -> str:
    return f"{count:,} messages were accepted before the failure"


def publish(
    topic: str,
    messages: Iterable[Any],
    *,
    url: str | None = None,
    rate: float | None = None,
    chunk_size: int = 1000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    broker_timeout: float | None = None,
) -> int:
    """Publish `messages` (dicts are sent as JSON; str/bytes as they are); returns the count.

    `rate` paces publishing to about that many messages per second. Through a broker
    restart publishing waits and goes on (up to `broker_timeout` seconds, default 5 min);
    past that it raises `BrokerUnavailable`, whose `accepted` says how many got in.

    Example:
        >>> import inferline
        >>> rows = [{"id": 1, "feature": [5.1, 3.5, 1.4, 0.2]}]
        >>> inferline.publish("iris", rows, url="queue.db")  # doctest: +SKIP
        1
    """
    target = open_topic(url or default_url(), topic, broker_timeout=broker_timeout)
    size = chunk_size if rate is None else max(1, min(chunk_size, int(rate // 100) or 1))
    count = 0
    started = clock()
    try:
        for chunk in chunks((_encode(m) for m in messages), size):
            if rate is not None:
                wait = started + count / rate - clock()
                if wait > 0:
                    sleep(wait)
            try:
                target.publish(chunk)
            except BrokerUnavailable as exc:
                raise BrokerUnavailable(f"{exc}; {_accepted(count)}", accepted=count) from None
            except InferlineError:
                raise
            except Exception as exc:  # e.g. Redis refusing writes (OOM): nothing to wait for
                raise BrokerUnavailable(
                    f"topic {topic} at {target.url}: publishing failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); {_accepted(count)}",
                    accepted=count,
                ) from None
            count += len(chunk)
    finally:
        target.close()
    return count
