"""One listening socket served by several processes, its connections split evenly between them.

An event loop accepting for itself takes every pending connection at each wake-up, so when
wrk opened its 32 keep-alive connections one process got 29 and the other 3, and one core sat
idle. Here each process accepts on a thread, one connection at a time, in round-robin turns
among the processes accepting (shared memory: each process's open connections, or
`NOT_ACCEPTING`, and the process that accepted last); a process whose turn it is not takes a
pending connection itself only when the others leave it waiting `GIVE_WAY_S` (stopped, or too
busy to accept). Turns rather than "the least open connections": a client that closes its
connections and opens new ones at once (wrk's next run) found the counts of the process that
had its old ones not yet lowered, and the other process took all 32.

The socket stays blocking: its flags are shared by every process holding it, and a thread
blocked in `accept()` is woken by the kernel for exactly one connection.

Example:
    >>> counts = open_counts(2)
    >>> server = SharedSocketServer(config, shared=sock, counts=counts, index=0)  # doctest: +SKIP
    >>> server.run(sockets=[])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import select
import socket
import threading
import time
from collections.abc import Callable, MutableSequence
from typing import Any

import uvicorn

log = logging.getLogger("inferline.serve")

GIVE_WAY_S = 0.25  # how long a process ahead leaves a pending connection to the others (a
# runnable thread may wait ~0.1 s for a core on a loaded machine)
POLL_S = 0.05  # how often a process ahead looks at its turn when nothing is pending
NOT_ACCEPTING = 2**31 - 1  # the count of a process not accepting (yet, or any more)


def open_counts(processes: int) -> MutableSequence[int]:
    """Shared memory for each process's open connections (pass it to spawned processes), and
    after them the index of the process that accepted last (whose successor has the turn)."""
    counts: MutableSequence[int] = multiprocessing.get_context("spawn").RawArray("i", processes + 1)
    counts[:] = [NOT_ACCEPTING] * processes + [processes - 1]  # process 0 has the first turn
    return counts


def accepting(counts: MutableSequence[int]) -> list[int]:
    """The processes of `counts` that accept connections now."""
    return [index for index, count in enumerate(counts[:-1]) if count != NOT_ACCEPTING]


def turn(counts: MutableSequence[int]) -> int | None:
    """The accepting process whose turn it is to accept the next connection (None: none accepts)."""
    processes = len(counts) - 1
    last = counts[processes]
    for step in range(1, processes + 1):
        candidate = (last + step) % processes
        if counts[candidate] != NOT_ACCEPTING:
            return candidate
    return None


class SharedAccept:
    """Accepts `listening`'s connections on a thread into `loop`, taking its turn by `counts`."""

    def __init__(
        self,
        listening: socket.socket,
        loop: asyncio.AbstractEventLoop,
        protocol: Callable[[], asyncio.Protocol],
        *,
        counts: MutableSequence[int],
        index: int,
        give_way_s: float = GIVE_WAY_S,
        opens_after: int | None = None,
    ) -> None:
        self.listening = listening
        self.loop = loop
        self.protocol = protocol
        self.counts = counts
        self.index = index
        self.give_way_s = give_way_s
        # The process whose accepting opens this one's (an inference process waits for the main
        # one, which waits for them all): the first connections split evenly too.
        self.opens_after = opens_after
        self.stopped = False
        # Open connections = accepted - closed; each counter is written by one thread only
        # (accepted: the accepting thread, closed: the loop), so the count is never too low.
        self._accepted = 0
        self._closed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.listening.setblocking(True)
        self.counts[self.index] = 0  # accepting from now on: the others leave it its turns
        threading.Thread(target=self._accept_all, name="inferline-accept", daemon=True).start()

    def stop(self) -> None:
        """Take no more connections (a thread blocked in `accept()` stays until the process exits)."""
        self.stopped = True
        self.counts[self.index] = NOT_ACCEPTING

    def my_turn(self) -> bool:
        return turn(self.counts) in (self.index, None)

    def _accept_all(self) -> None:
        while self.opens_after is not None and self.counts[self.opens_after] == NOT_ACCEPTING:
            if self.stopped:
                return
            time.sleep(POLL_S / 5)
        pending_since: float | None = None
        while not self.stopped:
            if not self.my_turn():  # another process has the turn: it accepts ...
                if not _readable(self.listening, POLL_S):
                    pending_since = None
                    continue
                now = time.monotonic()
                pending_since = pending_since or now
                if now - pending_since < self.give_way_s:  # ... unless it leaves one waiting
                    time.sleep(POLL_S / 50)
                    continue
            pending_since = None
            try:
                connection, _ = self.listening.accept()
            except OSError as exc:  # out of file descriptors, a connection reset while queued
                if self.stopped or self.listening.fileno() < 0:
                    return
                log.warning("accepting a connection failed: %s", exc)
                time.sleep(POLL_S)
                continue
            if self.stopped:
                connection.close()
                return
            connection.setblocking(False)
            self._accepted += 1
            self.counts[-1] = self.index  # the next accepting process has the turn
            self.counts[self.index] = self._accepted - self._closed
            try:
                self.loop.call_soon_threadsafe(self._adopt, connection)
            except RuntimeError:  # the loop is closed: the process is exiting
                connection.close()
                return

    def _adopt(self, connection: socket.socket) -> None:
        task = self.loop.create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self._counted, connection)
        except OSError as exc:  # the client went away before its protocol started
            log.debug("connection dropped before serving: %s", exc)
            self._closed += 1
            with contextlib.suppress(OSError):
                connection.close()

    def _counted(self) -> asyncio.Protocol:
        """The server's protocol, counting its connection's end."""
        protocol = self.protocol()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._closed += 1
            if not self.stopped:  # seen now, even while the thread waits in accept()
                self.counts[self.index] = self._accepted - self._closed
            lost(exc)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    try:
        ready, _, _ = select.select([sock], [], [], timeout_s)
    except (ValueError, OSError):  # closed: the process is exiting
        return False
    return bool(ready)


class SharedSocketServer(uvicorn.Server):
    """uvicorn serving its own sockets plus `shared`, accepted in turn by `SharedAccept`."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        shared: socket.socket,
        counts: MutableSequence[int],
        index: int,
        opens_after: int | None = None,
    ) -> None:
        super().__init__(config)
        self.shared = shared
        self.counts = counts
        self.index = index
        self.opens_after = opens_after
        self.acceptor: SharedAccept | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        # The connection protocol of uvicorn's own listeners (its startup builds the same).
        protocol_class: Any = self.config.http_protocol_class  # typed as a bare asyncio.Protocol
        protocol = functools.partial(
            protocol_class, config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        self.acceptor = SharedAccept(
            self.shared,
            asyncio.get_running_loop(),
            protocol,
            counts=self.counts,
            index=self.index,
            opens_after=self.opens_after,
        )
        self.acceptor.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.acceptor is not None:
            self.acceptor.stop()
        await super().shutdown(sockets)
