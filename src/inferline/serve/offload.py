"""Where request work that would hold the event loop runs: a bounded thread pool and one process.

Decoding images (Pillow releases the GIL), reading bodies, encoding large answers in slices
and predicting go to threads, so `/ping` and `/metrics` keep answering. Parsing a large JSON
body cannot: `json.loads` and `np.asarray` hold the GIL for their whole run, so a thread would
freeze the loop all the same. Those bodies go to a worker process, which sends back only the
finished float64 rows. Both pools are bounded: excess work queues instead of starting threads
or processes without limit.

Example:
    >>> offload = Offload(threads=4)
    >>> rows = await offload.thread(parse, body)  # doctest: +SKIP
    >>> rows = offload.in_process(parse_instances, body, route, spec)  # doctest: +SKIP  (from a thread)
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from inferline.serve.bodies import parse_json_arrays
from inferline.serve.http import ApiError, parse_json

T = TypeVar("T")

THREAD_BODY_BYTES = 32 * 1024  # bodies at least this large are parsed off the event loop
PROCESS_BODY_BYTES = 256 * 1024  # ... and in the worker process when plain JSON instances


class Offload:
    """The server's pools for blocking request work (one per server)."""

    def __init__(self, *, threads: int = 4, processes: int = 1) -> None:
        self.threads = max(1, threads)
        self.processes = max(1, processes)
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def thread(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on one of the pool's threads."""
        if self._thread_pool is None:
            self._thread_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="inferline-request")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread_pool, functools.partial(fn, *args))

    def in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the worker process; call it from a thread, never from the event loop.

        `fn` must be a module-level function of picklable arguments and result.
        """
        with self._lock:
            if self._process_pool is None:
                # forkserver: never fork a process that runs threads and an event loop.
                context = multiprocessing.get_context("forkserver")
                self._process_pool = ProcessPoolExecutor(self.processes, mp_context=context)
            pool = self._process_pool
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            with self._lock:
                if self._process_pool is pool:
                    self._process_pool = None  # the next request starts a fresh worker
            raise ApiError(
                503,
                "ServiceUnavailableException",
                "the body parsing worker died (out of memory?); retry shortly",
            ) from exc

    def parse_json(self, body: bytes, *, route: str) -> Any:
        """A JSON body, parsed in the worker process when large (long number lists as arrays).

        Large bodies are only ever parsed on a request thread (`ServerState`), where waiting
        for the worker blocks nothing else.
        """
        if len(body) >= PROCESS_BODY_BYTES and threading.current_thread() is not threading.main_thread():
            return self.in_process(parse_json_arrays, body, route)
        return parse_json(body, route=route)

    def close(self) -> None:
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
            self._thread_pool = None
        with self._lock:
            if self._process_pool is not None:
                self._process_pool.shutdown(wait=False, cancel_futures=True)
                self._process_pool = None
