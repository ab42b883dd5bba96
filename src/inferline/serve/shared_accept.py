"""One listening socket served by several processes, its connections split evenly between them.

An event loop accepting for itself takes every pending connection at each wake-up, so when
wrk opened its 32 keep-alive connections one process got 29 and the other 3, and one core sat
idle. Here each process accepts on a thread, one connection at a time, and only while it has
no more open connections than the least loaded process (`counts`, shared memory with one slot
per process); a process ahead gives way, and takes a pending connection itself only when the
others leave it waiting `GIVE_WAY_S` (stopped, or too busy to accept).

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
    """Shared memory for each process's open connections (pass it to spawned processes)."""
    counts: MutableSequence[int] = multiprocessing.get_context("spawn").RawArray("i", processes)
    counts[:] = [NOT_ACCEPTING] * processes  # until each process starts accepting
    return counts


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
    ) -> None:
        self.listening = listening
        self.loop = loop
        self.protocol = protocol
        self.counts = counts
        self.index = index
        self.give_way_s = give_way_s
        self.stopped = False
        # Open connections = accepted - closed; each counter is written by one thread only
        # (accepted: the accepting thread, closed: the loop), so the count is never too low.
        self._accepted = 0
        self._closed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.listening.setblocking(True)
        threading.Thread(target=self._accept_all, name="inferline-accept", daemon=True).start()

    def stop(self) -> None:
        """Take no more connections (a thread blocked in `accept()` stays until the process exits)."""
        self.stopped = True
        self.counts[self.index] = NOT_ACCEPTING

    def my_turn(self) -> bool:
        mine = self._accepted - self._closed
        self.counts[self.index] = mine
        return mine <= min(self.counts)

    def _accept_all(self) -> None:
        pending_since: float | None = None
        while not self.stopped:
            if not self.my_turn():  # another process has fewer connections: it accepts ...
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
        self, config: uvicorn.Config, *, shared: socket.socket, counts: MutableSequence[int], index: int
    ) -> None:
        super().__init__(config)
        self.shared = shared
        self.counts = counts
        self.index = index
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
            self.shared, asyncio.get_running_loop(), protocol, counts=self.counts, index=self.index
        )
        self.acceptor.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.acceptor is not None:
            self.acceptor.stop()
        await super().shutdown(sockets)
