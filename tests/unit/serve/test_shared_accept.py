"""SharedAccept: processes sharing one listening socket take its connections in turn.

Two acceptors (each with its own event loop on a thread, as two processes would have) share
one real listening socket and one `open_counts` array.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, MutableSequence
from contextlib import contextmanager

from inferline.serve.shared_accept import NOT_ACCEPTING, SharedAccept, open_counts


class Connections(asyncio.Protocol):
    def __init__(self, transports: list[asyncio.BaseTransport]) -> None:
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)


class Served(list[asyncio.BaseTransport]):
    """The connections one acceptor serves, and its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop


@contextmanager
def acceptor(
    listening: socket.socket,
    counts: MutableSequence[int],
    index: int,
    give_way_s: float,
    *,
    opens_after: int | None = None,
) -> Iterator[Served]:
    """A started SharedAccept on its own loop; yields the connections it serves."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    transports = Served(loop)
    shared = SharedAccept(
        listening,
        loop,
        lambda: Connections(transports),
        counts=counts,
        index=index,
        give_way_s=give_way_s,
        opens_after=opens_after,
    )
    shared.start()
    try:
        yield transports
    finally:
        shared.stop()

        def close() -> None:
            for transport in transports:
                transport.close()
            loop.call_soon(loop.stop)  # after the transports' own close callbacks

        loop.call_soon_threadsafe(close)
        thread.join(5)
        loop.close()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_two_processes_take_connections_in_turn() -> None:
    listening = listening_socket()
    counts = open_counts(2)
    clients = []
    # Never giving way by time: only the turns decide, however slow the machine.
    with acceptor(listening, counts, 0, 60) as first, acceptor(listening, counts, 1, 60) as second:
        for n in range(1, 11):
            clients.append(socket.create_connection(listening.getsockname()))
            wait_for(lambda n=n: len(first) + len(second) == n, f"connection {n} not accepted")
            assert abs(len(first) - len(second)) <= 1, (len(first), len(second))
        served_by_first = {t.get_extra_info("peername") for t in first}
        for client in [c for c in clients if c.getsockname() in served_by_first][:2]:
            client.close()  # closed connections count no more
        wait_for(lambda: list(counts)[:2] == [3, 5], f"closed connections still count: {list(counts)}")
    assert (len(first), len(second)) == (5, 5)
    for client in clients:
        client.close()
    listening.close()


def test_turns_do_not_follow_counts_not_yet_lowered() -> None:
    """wrk's next run: its old connections all on one process, closed just before the new ones
    open, while that process's loop has not yet seen the closes; the new ones still split evenly."""
    listening = listening_socket()
    counts = open_counts(2)
    with acceptor(listening, counts, 0, 60) as first:
        old = [socket.create_connection(listening.getsockname()) for _ in range(8)]
        wait_for(lambda: len(first) == 8, "the only accepting process did not take the connections")
        with acceptor(listening, counts, 1, 60) as second:
            busy = threading.Event()
            first.loop.call_soon_threadsafe(lambda: (busy.set(), time.sleep(1.0)))  # a batch running
            wait_for(busy.is_set, "the first loop did not start its batch")
            for client in old:
                client.close()
            new = [socket.create_connection(listening.getsockname()) for _ in range(8)]
            wait_for(lambda: len(first) + len(second) == 16, "the new connections were not accepted")
            assert (len(first) - 8, len(second)) == (4, 4)
    for client in new:
        client.close()
    listening.close()


def test_a_process_that_does_not_accept_is_not_waited_for() -> None:
    listening = listening_socket()
    counts = open_counts(2)
    assert list(counts)[:2] == [NOT_ACCEPTING, NOT_ACCEPTING]
    counts[0] = 0  # process 0 says it has no connection, then stops accepting (e.g. SIGSTOP)
    with acceptor(listening, counts, 1, 0.05) as only:
        clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
        wait_for(lambda: len(only) == 3, "the accepting process did not take the connections")
    for client in clients:
        client.close()
    listening.close()


def test_an_inference_process_accepts_only_once_the_main_one_does() -> None:
    listening = listening_socket()
    counts = open_counts(2)
    with acceptor(listening, counts, 1, 0.05, opens_after=0) as helper:
        clients = [socket.create_connection(listening.getsockname()) for _ in range(4)]
        time.sleep(0.3)  # long enough for a give-way: the main process is not accepting yet
        assert len(helper) == 0 and counts[1] == 0
        with acceptor(listening, counts, 0, 60) as main:
            wait_for(lambda: len(main) + len(helper) == 4, "the connections were not accepted")
            assert (len(main), len(helper)) == (2, 2)
    for client in clients:
        client.close()
    listening.close()
