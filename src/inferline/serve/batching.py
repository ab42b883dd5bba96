"""Dynamic batching: concurrent requests for one model version run as one `predict` call.

A `DynamicBatcher` owns a bounded queue and one asyncio task. The task takes the first
waiting request, then gathers more until the batch holds `batch_size` rows or the
`max_batch_delay` deadline (on `time.monotonic()`) passes, runs the whole batch in one call
and hands each request its own rows back. It waits only for requests likely to come: ones
being received and, with `await_answered`, the clients the last model call answered (a client
on a kept-alive connection sends its next request when answered), until as many requests came
in since that answer as it answered, within `max_batch_delay` of it. Otherwise the batch runs
at once, so a lone request (or a lone client's next one) pays no delay. Without waiting for
them, 16 clients settle into two alternating batches of 8, each model call then costing more
per request; that alternation is what keeps one process's event loop and model calls busy at
once, so only `serve --processes N` (whose other processes use the core meanwhile) waits.

A batch whose model call is estimated (from the measured cost per row and this batch's size)
cheaper than `inline_below_ms` runs on the event loop (a thread hop costs more); others run on
a dedicated worker thread so the loop keeps serving sockets. A request larger than
`batch_size` is predicted in model calls of `batch_size` rows. `workers` (TorchServe's scale
workers) is how many model calls may run at once, each on its own thread; 0 refuses requests
until scaled up again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from inferline.errors import InferlineError
from inferline.models.base import Prediction


class QueueFullError(InferlineError, RuntimeError):
    """The model's request queue is full; the client should retry later (HTTP 503)."""


class NoWorkerError(QueueFullError):
    """The model is scaled to 0 workers (HTTP 503, as TorchServe answers)."""


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[Prediction]
    queued_at: float = 0.0


BatchObserver = Callable[[int, float], None]
WaitObserver = Callable[[float], None]


class DynamicBatcher:
    """Gathers concurrent `predict` calls for one model into batches.

    Example:
        >>> batcher = DynamicBatcher(model.predict, batch_size=32, max_batch_delay_ms=5)  # doctest: +SKIP
        >>> prediction = await batcher.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))  # doctest: +SKIP
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], Prediction],
        *,
        batch_size: int = 32,
        max_batch_delay_ms: float = 5.0,
        max_queue: int = 1024,
        inline_below_ms: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_batch: BatchObserver | None = None,
        on_wait: WaitObserver | None = None,
        name: str = "model",
        workers: int = 1,
        await_answered: bool = False,
    ) -> None:
        self.predict_batch = predict
        self.workers = max(0, workers)
        self.batch_size = max(1, batch_size)
        self.max_batch_delay_ms = max(0.0, max_batch_delay_ms)
        self.max_queue = max(1, max_queue)
        self.inline_below_ms = inline_below_ms
        self.clock = clock
        self.on_batch = on_batch
        self.on_wait = on_wait  # seconds each request waited in the queue (TorchServe's queue latency)
        self.name = name
        self.batches = 0
        self._queue: deque[_Pending] = deque()
        self._arriving = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._threads = 0  # the executor's width
        self._cost_per_row_ms: float | None = None  # moving average of model calls, per row
        self._closing = False
        self._busy = 0  # model calls running on worker threads (workers > 1)
        self._running: set[asyncio.Task[None]] = set()
        # The last model call's answered requests, when, and how many requests came since.
        self.await_answered = await_answered
        self._answered = 0
        self._answered_at = float("-inf")
        self._since_answer = 0

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch being predicted)."""
        return len(self._queue)

    def expect(self) -> None:
        """A request for this model is being received: worth waiting for when batching."""
        self._arriving += 1

    def unexpect(self) -> None:
        self._arriving = max(0, self._arriving - 1)

    async def predict(self, rows: np.ndarray, *, expected: bool = False) -> Prediction:
        """Predict `rows` as part of a batch; raises `QueueFullError` when the queue is full.

        `expected=True` says this call was announced with `expect()`.
        """
        if expected:
            self.unexpect()
        if self.workers == 0:
            raise NoWorkerError(
                f"model {self.name} has no worker to serve inference requests; "
                "add workers with the scale workers API (PUT /models/NAME?min_worker=1)"
            )
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(
                f"model {self.name}: request queue is full ({self.max_queue} waiting); retry shortly"
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"batcher:{self.name}")
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append(_Pending(rows, future, self.clock()))
        self._since_answer += 1
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Answer everything queued or in flight, then stop the worker task and thread.

        A request that still arrives afterwards is served all the same (the worker restarts
        and stops again once idle), so closing never fails a request.
        """
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            assert self._wakeup is not None
            self._wakeup.set()
            await task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            if not self._queue:
                if self._closing:
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            if self.workers <= 1:
                await self._predict(await self._gather(wakeup))
                continue
            if self._busy >= self.workers:  # every worker is busy: wait for one to finish
                wakeup.clear()
                await wakeup.wait()
                continue
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._predict(await self._gather(wakeup)))
            self._running.add(task)
            task.add_done_callback(lambda done: self._finished(done, wakeup))

    def _finished(self, task: asyncio.Task[None], wakeup: asyncio.Event) -> None:
        self._busy -= 1
        self._running.discard(task)
        wakeup.set()

    def scale(self, workers: int) -> None:
        """Run up to `workers` model calls at once from now on (0: refuse new requests)."""
        self.workers = max(0, workers)
        if self._executor is not None and self._threads != max(1, self.workers):
            self._executor.shutdown(wait=False)  # calls already running finish on their threads
            self._executor = None

    async def _gather(self, wakeup: asyncio.Event) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].rows)
        deadline = self.clock() + self.max_batch_delay_ms / 1000.0
        while rows < self.batch_size:
            if self._queue:
                if rows + len(self._queue[0].rows) > self.batch_size:
                    break
                item = self._queue.popleft()
                batch.append(item)
                rows += len(item.rows)
                continue
            if self._arriving <= 0 and not self._answered_coming_back():
                break
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), remaining)
            except TimeoutError:
                break
        return batch

    def _answered_coming_back(self) -> bool:
        """Whether the clients the last model call answered may still send their next request:
        fewer requests came since than it answered, within `max_batch_delay` of the answer."""
        return (
            self.await_answered
            and self.workers <= 1
            and not self._closing
            and self._since_answer < self._answered
            and self.clock() < self._answered_at + self.max_batch_delay_ms / 1000.0
        )

    async def _predict(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client may have gone away
        if not live:
            return
        if self.on_wait is not None:
            now = self.clock()
            for pending in live:
                self.on_wait(now - pending.queued_at)
        inputs = live[0].rows if len(live) == 1 else np.concatenate([p.rows for p in live])
        # Inline only what is measured to be cheap at this batch's size: a cheap model given
        # 700k rows must not run on the event loop.
        # Several workers mean calls that overlap: none may hold the loop.
        per_row = self._cost_per_row_ms
        if (
            per_row is not None
            and self.workers <= 1
            and len(inputs) <= self.batch_size
            and per_row * len(inputs) < self.inline_below_ms
        ):
            outcome = self._call(live, inputs)
        else:
            if self._executor is None:
                self._threads = max(1, self.workers)
                self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix=f"predict-{self.name}")
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._executor, self._call, live, inputs)
        self.batches += 1
        for pending, result in zip(live, outcome, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        self._answered, self._answered_at, self._since_answer = len(live), self.clock(), 0

    def _call(self, live: list[_Pending], inputs: np.ndarray) -> list[Prediction | BaseException]:
        try:
            whole = self._predict_in_slices(inputs)
            results: list[Prediction | BaseException] = _split(whole, [len(p.rows) for p in live])
        except Exception as exc:
            if len(live) == 1:
                results = [exc]
            else:
                # One bad request must not fail its neighbours: retry each on its own.
                results = []
                for pending in live:
                    try:
                        results.append(self._predict_in_slices(pending.rows))
                    except Exception as single:
                        results.append(single)
        return results

    def _predict_in_slices(self, inputs: np.ndarray) -> Prediction:
        """One model call per `batch_size` rows: a huge request neither hogs memory nor the GIL."""
        if len(inputs) <= self.batch_size:
            return self._timed(inputs)
        parts = [self._timed(inputs[i : i + self.batch_size]) for i in range(0, len(inputs), self.batch_size)]
        return Prediction.concat(parts)

    def _timed(self, inputs: np.ndarray) -> Prediction:
        start = time.perf_counter()
        try:
            return self.predict_batch(inputs)
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            per_row = elapsed_ms / max(1, len(inputs))
            cost = self._cost_per_row_ms
            self._cost_per_row_ms = per_row if cost is None else 0.8 * cost + 0.2 * per_row
            if self.on_batch is not None:
                self.on_batch(len(inputs), elapsed_ms / 1000.0)


def _split(whole: Prediction, sizes: list[int]) -> list[Prediction | BaseException]:
    total = sum(sizes)
    if len(whole.prediction) != total:
        error = ValueError(f"model returned {len(whole.prediction)} predictions for {total} rows")
        return [error for _ in sizes]
    if len(sizes) == 1:
        return [whole]
    out: list[Prediction | BaseException] = []
    start = 0
    for size in sizes:
        end = start + size
        out.append(whole.rows(start, end))
        start = end
    return out
