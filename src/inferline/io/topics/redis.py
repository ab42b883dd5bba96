"""Redis Streams topics: XADD to publish, XREADGROUP/XACK in a consumer group.

A consumer first re-reads its own pending entries (what it had in flight when it last
stopped), then new ones; every `lease_seconds / 2` it also XAUTOCLAIMs entries another
consumer has left pending for longer than the lease (a consumer that crashed for good).

Every call goes through a `Reconnector`: when Redis restarts, calls are retried with
backoff until it is back (or `broker_timeout` passes). A consumer then re-reads its own
pending entries again, skipping those still in flight, since an XREADGROUP whose reply was
lost has delivered entries nobody received. A published chunk is one MULTI/EXEC that also
sets a marker key (deleted with the next chunk), so a retry first looks whether the lost
attempt got in: no chunk is added twice, even if consumers have already trimmed it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from inferline.errors import InputError, require
from inferline.io.topics.base import DEFAULT_LEASE_SECONDS, KEEP_ACKED, Message, Retention
from inferline.io.topics.owners import dead_here, refuse_if_taken, this_process
from inferline.io.topics.reconnect import DEFAULT_BROKER_TIMEOUT, Reconnector

_BODY = b"b"
_TOKEN = b"t"  # on a published chunk's first entry: finds the chunk after a lost reply
_MARKER_SECONDS = 600  # a chunk's "it got in" key outlives any outage we wait through
_MAX_SEQUENCE = 2**64 - 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: tuple[int, int]) -> tuple[int, int]:
    ms, seq = entry_id
    return (ms + 1, 0) if seq == _MAX_SEQUENCE else (ms, seq + 1)


def _message(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Message:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    # The id's first half is the server's clock when the entry was added, in ms.
    published = int(text.split("-", 1)[0]) / 1000.0
    return Message(text, (fields or {}).get(_BODY, b""), published)


class RedisTopic:
    """A Redis stream named after the topic, at `redis://host:port/db`.

    Example:
        >>> topic = RedisTopic("redis://127.0.0.1:6379/0", "iris")
        >>> topic.open()  # doctest: +SKIP
    """

    def __init__(self, url: str, name: str, *, broker_timeout: float = DEFAULT_BROKER_TIMEOUT) -> None:
        self.url = url
        self.name = name
        self.broker_timeout = broker_timeout
        self._client: Any = None
        self._reconnector: Reconnector | None = None
        self._publisher = uuid.uuid4().hex[:16]
        self._chunks = 0
        self._last_id: str | None = None  # the newest entry id this topic knows is in the stream
        self._marker: str | None = None  # the key saying the last chunk got in

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisTopic used before open()")
        return self._client

    @property
    def reconnector(self) -> Reconnector:
        if self._reconnector is None:
            raise RuntimeError("RedisTopic used before open()")
        return self._reconnector

    def call(self, fn: Callable[[], Any]) -> Any:
        """`fn()` against Redis, retried through a broker restart (see `Reconnector`)."""
        return self.reconnector.call(fn)

    def open(self) -> None:
        redis = require("redis", "redis")
        from redis.backoff import NoBackoff  # type: ignore[import-not-found,unused-ignore]
        from redis.retry import Retry  # type: ignore[import-not-found,unused-ignore]

        # The client's own retries would hide an outage; the Reconnector does the retrying.
        client = redis.Redis.from_url(  # type: ignore[attr-defined]
            self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=10, socket_timeout=60
        )
        try:
            client.ping()
        except redis.exceptions.RedisError as exc:  # type: ignore[attr-defined]
            raise InputError(
                f"topic {self.name}: cannot reach Redis at {self.url} ({exc}); is redis-server running?"
            ) from None
        self._client = client
        self._reconnector = Reconnector(
            f"topic {self.name}: Redis at {self.url}",
            errors=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),  # type: ignore[attr-defined]
            timeout=self.broker_timeout,
        )

    def publish(self, bodies: list[bytes]) -> list[str]:
        if not bodies:
            return []
        token = f"{self._publisher}:{self._chunks}".encode()
        marker = f"{self.name}:inferline-chunk:{token.decode()}"
        self._chunks += 1
        tried = False

        def attempt() -> list[str]:
            nonlocal tried
            if self._last_id is None:
                newest = self.client.xrevrange(self.name, count=1)
                self._last_id = _text(newest[0][0]) if newest else "0-0"
            # The last attempt's reply was lost: did the chunk get in? (The marker key says
            # so even when consumers have already trimmed the entries.)
            if tried and self.client.exists(marker):
                return self._find_chunk(token, len(bodies))
            tried = True
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.name, {_BODY: bodies[0], _TOKEN: token})
            for body in bodies[1:]:
                pipe.xadd(self.name, {_BODY: body})
            pipe.set(marker, b"1", ex=_MARKER_SECONDS)
            if self._marker is not None:
                pipe.delete(self._marker)  # the previous chunk's reply came: its marker is done
            return [_text(i) for i in pipe.execute()[: len(bodies)]]

        ids: list[str] = self.call(attempt)
        self._marker = marker
        if ids and ids[-1]:
            self._last_id = ids[-1]
        return ids

    def _find_chunk(self, token: bytes, count: int) -> list[str]:
        # MULTI/EXEC added the chunk's entries back to back, after everything we saw before it.
        start = f"({self._last_id}" if self._last_id != "0-0" else "-"
        while True:
            entries = self.client.xrange(self.name, min=start, count=1000)
            for entry_id, fields in entries:
                if (fields or {}).get(_TOKEN) == token:
                    chunk = self.client.xrange(self.name, min=_text(entry_id), count=count)
                    return [_text(i) for i, _ in chunk]
            if len(entries) < 1000:
                return [""] * count  # in, but already consumed and trimmed: ids unknown
            start = f"({_text(entries[-1][0])}"

    def consumer(
        self,
        group: str,
        name: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention: Retention = KEEP_ACKED,
    ) -> RedisConsumer:
        consumer = RedisConsumer(self, group, name, lease_seconds=lease_seconds, retention=retention)
        consumer.open()
        return consumer

    def close(self) -> None:
        if self._client is not None:
            if self._marker is not None:
                try:
                    self._client.delete(self._marker)
                except Exception:  # noqa: BLE001 - best effort: the key expires anyway
                    pass
            self._client.close()
            self._client = None


class RedisConsumer:
    """One consumer of a group on a `RedisTopic` (see `Consumer`)."""

    def __init__(
        self,
        topic: RedisTopic,
        group: str,
        name: str,
        *,
        lease_seconds: float,
        retention: Retention = KEEP_ACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.group = group
        self.name = name
        self.lease_seconds = lease_seconds
        self.retention = retention
        self.clock = clock
        self._acked_since_trim = 0
        self._last_trim = clock()
        self._own_cursor: str | None = "0"  # replaying our own pending entries until exhausted
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        # Delivered to this process and not acked yet: a replay after a reconnection skips them.
        self._in_flight: set[str] = set()
        self._recoveries = 0
        self._registered = 0.0
        self._took_over = False

    def open(self) -> None:
        redis = require("redis", "redis")
        try:
            self.topic.call(
                lambda: self.topic.client.xgroup_create(self.topic.name, self.group, id="0", mkstream=True)
            )
        except redis.exceptions.ResponseError as exc:  # type: ignore[attr-defined]
            if "BUSYGROUP" not in str(exc):
                raise
        self._recoveries = self.topic.reconnector.recoveries
        self.topic.call(self._register)

    def _owner_key(self, name: str) -> str:
        return f"{self.topic.name}:inferline-consumer:{self.group}:{name}"

    def _register(self) -> None:
        # The name's owner key lives one lease unless refreshed (reads refresh it), so a
        # process on another host that died frees its name after a lease.
        client, key, me = self.topic.client, self._owner_key(self.name), this_process()
        ttl = max(int(self.lease_seconds * 1000), 1000)
        if not client.set(key, me, nx=True, px=ttl):
            refuse_if_taken(self.topic.name, self.group, self.name, client.get(key))
            client.set(key, me, px=ttl)
        self._registered = self.clock()

    def _heartbeat(self) -> None:
        if self.clock() - self._registered >= self.lease_seconds / 4:
            ttl = max(int(self.lease_seconds * 1000), 1000)
            self.topic.client.set(self._owner_key(self.name), this_process(), px=ttl)
            self._registered = self.clock()

    def _take_over_dead(self) -> None:
        # Pending entries of a consumer whose process on this host is gone: ours now (the
        # replay from id 0 reads them), instead of waiting a lease for XAUTOCLAIM.
        client, stream = self.topic.client, self.topic.name
        for info in client.xinfo_consumers(stream, self.group):
            name = _text(info["name"])
            if name == self.name or not int(info.get("pending") or 0):
                continue
            if not dead_here(client.get(self._owner_key(name))):
                continue
            # One taker per dead consumer, even if several restart at once.
            if not client.set(self._owner_key(name) + ":taken", self.name, nx=True, px=30_000):
                continue
            while True:
                rows = client.xpending_range(
                    stream, self.group, min="-", max="+", count=1000, consumername=name
                )
                if not rows:
                    break
                client.xclaim(stream, self.group, self.name, 0, [r["message_id"] for r in rows], justid=True)
            client.xgroup_delconsumer(stream, self.group, name)
            client.delete(self._owner_key(name))

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if not self._took_over:  # on the first read, so a consumer that only looks takes nothing
            self.topic.call(self._take_over_dead)
            self._took_over = True
        self.topic.call(self._heartbeat)
        messages: list[Message] = self.topic.call(lambda: self._read(max_messages, timeout))
        self._in_flight.update(m.id for m in messages)
        return messages

    def _read(self, max_messages: int, timeout: float) -> list[Message]:
        client, stream = self.topic.client, self.topic.name
        if self.topic.reconnector.recoveries != self._recoveries:
            # Redis was away: an XREADGROUP whose reply was lost left entries pending on us.
            self._recoveries = self.topic.reconnector.recoveries
            self._own_cursor = "0"
        while self._own_cursor is not None:
            reply = client.xreadgroup(self.group, self.name, {stream: self._own_cursor}, count=max_messages)
            entries = reply[0][1] if reply else []
            if not entries:
                self._own_cursor = None
                break
            self._own_cursor = _text(entries[-1][0])
            own = [_message(i, f) for i, f in entries if _text(i) not in self._in_flight]
            if own:
                return self._counted(own)
        if time.monotonic() >= self._next_claim:
            claimed = self._reclaim(max_messages)
            if claimed:
                return claimed
        block = int(timeout * 1000)
        # BLOCK 0 would wait forever: a zero timeout means "do not block".
        reply = client.xreadgroup(
            self.group, self.name, {stream: ">"}, count=max_messages, block=block if block > 0 else None
        )
        entries = reply[0][1] if reply else []
        # A Redis restarted without its last writes (appendfsync everysec) hands out again what
        # it already gave us: what is still in flight here is not read twice.
        return [_message(i, f) for i, f in entries if not self._in_flight or _text(i) not in self._in_flight]

    def _reclaim(self, max_messages: int) -> list[Message]:
        reply = self.topic.client.xautoclaim(
            self.topic.name,
            self.group,
            self.name,
            min_idle_time=int(self.lease_seconds * 1000),
            start_id=self._claim_cursor,
            count=max_messages,
        )
        cursor = _text(reply[0])
        self._claim_cursor = cursor
        if cursor == "0-0":  # the scan went round: look again in half a lease
            self._next_claim = time.monotonic() + self.lease_seconds / 2
        claimed = [_message(i, f) for i, f in reply[1] if f is not None and _text(i) not in self._in_flight]
        return self._counted(claimed) if claimed else []

    def _counted(self, messages: list[Message]) -> list[Message]:
        # Redelivered entries (rare): how often each was delivered, for the poison-message limit.
        rows = self.topic.client.xpending_range(
            self.topic.name,
            self.group,
            min=messages[0].id,
            max=messages[-1].id,
            count=len(messages) * 2,
            consumername=self.name,
        )
        times = {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}
        return [replace(m, deliveries=times.get(m.id, 1)) for m in messages]

    def ack(self, ids: list[str]) -> None:
        if not ids:
            return
        # XACK is idempotent: acking again after a lost reply changes nothing.
        self.topic.call(lambda: self.topic.client.xack(self.topic.name, self.group, *ids))
        self._in_flight.difference_update(ids)
        self._acked_since_trim += len(ids)
        if self.retention.due(self._acked_since_trim, self.clock() - self._last_trim):
            self.trim()

    def trim(self) -> int:
        self._acked_since_trim = 0
        self._last_trim = self.clock()
        if self.retention.keep_all:
            return 0
        # Recomputed from scratch on every attempt: the bounds only move forward.
        return int(self.topic.call(self._trim))

    def _trim(self) -> int:
        client, stream = self.topic.client, self.topic.name
        groups = [(_text(g["name"]), g.get("last-delivered-id")) for g in client.xinfo_groups(stream)]
        if not groups:
            return 0
        pipe = client.pipeline(transaction=False)
        for name, _ in groups:
            pipe.xpending(stream, name)
        needed: list[tuple[int, int]] = []
        for (_, delivered), summary in zip(groups, pipe.execute(), strict=True):
            # The entry after the last one handed out: nothing from there on was delivered.
            needed.append(_after(_parse_id(delivered or "0-0")))
            if summary.get("min") is not None:  # the oldest entry delivered but not acked
                needed.append(_parse_id(summary["min"]))
        ms, seq = min(needed)
        return int(client.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))

    def _group_info(self) -> dict[Any, Any]:
        for info in self.topic.call(lambda: self.topic.client.xinfo_groups(self.topic.name)):
            name = info.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                return dict(info)
        return {}

    def pending(self) -> int:
        return int(self._group_info().get("pending") or 0)

    def backlog(self) -> int:
        info = self._group_info()
        lag = info.get("lag")
        if lag is None:  # Redis cannot tell after deletions; count from the stream length
            length = self.topic.call(lambda: self.topic.client.xlen(self.topic.name))
            lag = max(int(length) - int(info.get("entries-read") or 0), 0)
        return int(lag) + int(info.get("pending") or 0)

    def close(self) -> None:
        """Trims what was acked since the last trim, frees the name; best effort, no waiting."""
        if self.topic._client is None:
            return
        redis = require("redis", "redis")
        try:
            # With work left pending (a failed run) the key stays: the next consumer sees a dead
            # owner and takes the work over at once.
            mine = self.topic.client.get(self._owner_key(self.name)) == this_process().encode()
            if mine and not self._in_flight:
                self.topic.client.delete(self._owner_key(self.name))
            if not self.retention.keep_all and self._acked_since_trim:
                self._trim()  # once, without waiting for a broker that is away
        except redis.exceptions.RedisError:  # type: ignore[attr-defined]
            pass  # the next consumer's trim catches up; the name's key expires
