"""`inferline serve --processes N`: N server processes answering on one inference socket.

One Python process runs HTTP parsing, request decoding and handler code under one GIL, so it
uses about one core however many threads it has. With `--processes N` the main process
serves as always (every socket, gRPC, management, metrics) and starts N-1 inference
processes that accept connections on the same listening inference socket (inherited). Each
loads the models from the same store, batches its own requests and follows the store's
changes (`--watch-interval`): registrations and `set-default` reach every process that way.

Every process accepts on that socket in turn (`inferline.serve.shared_accept`), so each gets
its share of the connections; none accepts before all of them can (the main process waits
for the others to load their models, `wait_accepting`, and they for it).

Management and /metrics answer only in the main process (on `--management-port`, which N > 1
needs, unless `--metrics-port` is given), so changes kept in memory (unregistering, scaling
workers) apply to the main process; /metrics adds up every process's metrics
(`inferline.serve.peer_metrics`). An inference process stops when the main one exits.

Example:
    >>> counts = open_counts(2)  # doctest: +SKIP
    >>> helpers = start_inference_processes(1, config, "model_store", sockets[0], counts)  # doctest: +SKIP
    >>> stop_processes(helpers)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import MutableSequence
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

from inferline.serve.state import ServerConfig

log = logging.getLogger("inferline.serve")

PR_SET_PDEATHSIG = 1
BACKLOG = 2048  # uvicorn's default
START_TIMEOUT_S = 300.0  # how long the main process waits for the others to load and accept


def share_cores(processes: int) -> None:
    """Give each of `processes` server processes its share of the cores for torch/OpenMP
    threads (unless `OMP_NUM_THREADS` says otherwise): N processes each using every core would
    oversubscribe them. Set in the environment, so spawned processes inherit it."""
    if processes <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // processes)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported: its pool may have read the variable
        torch.set_num_threads(threads)


def inference_config(config: ServerConfig) -> ServerConfig:
    """The main process's config for an inference process: no gRPC servers (their ports are
    the main process's), the same ports table (management routes answer 404 naming their port)."""
    return replace(config, grpc_address=None, ts_grpc_address=None, ts_grpc_management_address=None)


def start_inference_processes(
    count: int,
    config: ServerConfig,
    store_root: str,
    listening: socket.socket,
    counts: MutableSequence[int],
) -> tuple[list[BaseProcess], list[Connection]]:
    """Start `count` inference processes serving `listening` (a bound socket), the main one
    being process 0 of `counts` (`shared_accept.open_counts(count + 1)`); returns them and a
    pipe to each that answers its metrics (`serve.peer_metrics`).

    spawn, not fork: the main process has imported torch and may run threads.
    """
    listening.listen(BACKLOG)  # now: every process accepts from this one queue
    context = multiprocessing.get_context("spawn")
    helpers: list[BaseProcess] = []
    pipes: list[Connection] = []
    for index in range(count):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=serve_inference,
            args=(inference_config(config), store_root, listening, os.getpid(), counts, index + 1, theirs),
            name=f"inferline-inference-{index + 1}",
            daemon=True,
        )
        process.start()
        helpers.append(process)
        pipes.append(ours)
    return helpers, pipes


def wait_accepting(
    helpers: list[BaseProcess], counts: MutableSequence[int], *, timeout_s: float = START_TIMEOUT_S
) -> None:
    """Until every inference process is ready to accept on the shared socket (or has died, or
    `timeout_s` passed): the server is announced, and the main process accepts (which lets the
    others accept), only once they all can. A client opening its connections as soon as the
    server answered (wrk) got them all in one process while the other still loaded its models."""
    from inferline.serve.shared_accept import NOT_ACCEPTING

    deadline = time.monotonic() + timeout_s
    waiting = list(enumerate(helpers, start=1))
    while waiting:
        waiting = [(i, p) for i, p in waiting if counts[i] == NOT_ACCEPTING and p.is_alive()]
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for _, p in waiting)
            log.warning("%s not accepting after %.0f s; serving without waiting for them", names, timeout_s)
            return
        time.sleep(0.05)


def stop_processes(helpers: list[BaseProcess], *, timeout_s: float = 15.0) -> None:
    """SIGTERM each (uvicorn answers what it has, then exits), SIGKILL what is left."""
    for process in helpers:
        if process.is_alive():
            process.terminate()
    for process in helpers:
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join(5)


def serve_inference(
    config: ServerConfig,
    store_root: str,
    listening: socket.socket,
    parent: int,
    counts: MutableSequence[int],
    index: int,
    metrics: Connection,
) -> None:
    """One inference process: the models of `store_root` served on `listening` until SIGTERM."""
    _die_with(parent)
    import warnings

    from inferline.models.store import ModelStore
    from inferline.serve.app import create_app, event_loop, freeze_heap, http_protocol
    from inferline.serve.peer_metrics import answer_metrics
    from inferline.serve.shared_accept import SharedSocketServer
    from inferline.serve.state import ServerState

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message=r"Image size .* decompression bomb")
    state = ServerState(config, store=ModelStore(store_root))
    assert state.catalog is not None
    state.catalog.load_all()
    answer_metrics(metrics, state.metrics.render)
    app = create_app(state)
    freeze_heap()
    uvicorn_config = uvicorn.Config(
        app, log_level="warning", access_log=False, loop=event_loop(config), http=http_protocol()
    )
    # Accepting only once the main process does, which waits for every inference process.
    server = SharedSocketServer(uvicorn_config, shared=listening, counts=counts, index=index, opens_after=0)
    server.run(sockets=[])


def _die_with(parent: int) -> None:
    """SIGTERM this process when its parent dies (even by SIGKILL): no orphan keeps the port."""
    if not sys.platform.startswith("linux"):
        return
    libc: Any = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
