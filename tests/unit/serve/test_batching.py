"""DynamicBatcher: gathering, size limits, the bounded queue, and isolation of bad requests."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from inferline.models.base import Prediction
from inferline.serve.batching import DynamicBatcher, NoWorkerError, QueueFullError


class DoublingModel:
    """A fake model that doubles its input and records the size of every call."""

    def __init__(self, *, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    def predict(self, rows: np.ndarray) -> Prediction:
        if self.gate is not None:
            self.gate.wait(5)
        if np.isnan(rows).any():
            raise ValueError("NaN in input")
        self.calls.append(len(rows))
        return Prediction(prediction=rows[:, 0] * 2, scores=rows * 10)


def test_concurrent_requests_share_a_model_call_and_get_their_own_rows() -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model.predict, batch_size=64, max_batch_delay_ms=50)

    async def main() -> list[Prediction]:
        for _ in range(10):
            batcher.expect()
        return await asyncio.gather(
            *(batcher.predict(np.array([[float(i)], [i + 0.5]]), expected=True) for i in range(10))
        )

    results = asyncio.run(main())
    assert model.calls == [20]
    for i, result in enumerate(results):
        assert result.prediction.tolist() == [2 * i, 2 * i + 1]
        assert result.scores is not None and result.scores.tolist() == [[10 * i], [10 * i + 5]]


def test_a_batch_never_exceeds_batch_size() -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model.predict, batch_size=4, max_batch_delay_ms=50)

    async def main() -> None:
        await asyncio.gather(*(batcher.predict(np.array([[1.0]])) for _ in range(10)))

    asyncio.run(main())
    assert sum(model.calls) == 10 and max(model.calls) <= 4 and model.calls[0] == 4


def test_a_lone_request_does_not_wait_for_the_delay() -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model.predict, batch_size=32, max_batch_delay_ms=10_000)

    async def main() -> Prediction:
        return await asyncio.wait_for(batcher.predict(np.array([[3.0]])), 2)

    assert asyncio.run(main()).prediction.tolist() == [6.0]


def test_waits_for_announced_requests_until_the_deadline() -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model.predict, batch_size=32, max_batch_delay_ms=2_000)

    async def main() -> None:
        batcher.expect()
        first = asyncio.ensure_future(batcher.predict(np.array([[1.0]])))
        await asyncio.sleep(0.05)  # the announced request's body is still "arriving"
        second = batcher.predict(np.array([[2.0]]), expected=True)
        await asyncio.gather(first, second)

    asyncio.run(main())
    assert model.calls == [2]


def test_the_clients_a_call_answered_are_waited_for_not_a_lone_one() -> None:
    """Two clients on kept-alive connections: the one answered second still gets its next
    request into the same call, as it comes back within the delay."""
    model = DoublingModel()
    batcher = DynamicBatcher(model.predict, batch_size=32, max_batch_delay_ms=30_000, await_answered=True)

    async def client(value: float, pause_s: float) -> None:
        await batcher.predict(np.array([[value]]))
        await asyncio.sleep(pause_s)  # reads its answer, sends again
        await batcher.predict(np.array([[value]]))

    async def main() -> None:
        await asyncio.gather(client(1.0, 0.0), client(2.0, 0.05))

    asyncio.run(main())
    assert model.calls == [2, 2]

    alone = DoublingModel()
    lone = DynamicBatcher(alone.predict, batch_size=32, max_batch_delay_ms=30_000, await_answered=True)

    async def one_client() -> None:  # its next request is the one answered coming back: no wait
        for value in (1.0, 2.0, 3.0):
            await asyncio.wait_for(lone.predict(np.array([[value]])), 10)

    asyncio.run(one_client())
    assert alone.calls == [1, 1, 1]

    # Without await_answered (one server process) the second client's request goes alone.
    single = DoublingModel()
    batcher = DynamicBatcher(single.predict, batch_size=32, max_batch_delay_ms=30_000)
    asyncio.run(main())
    assert single.calls == [2, 1, 1]


def test_answered_clients_are_not_waited_for_past_the_delay() -> None:
    now = [0.0]
    model = DoublingModel()
    batcher = DynamicBatcher(
        model.predict, batch_size=32, max_batch_delay_ms=5, clock=lambda: now[0], await_answered=True
    )

    async def main() -> None:
        await asyncio.gather(*(batcher.predict(np.array([[1.0]])) for _ in range(3)))
        now[0] += 10.0  # idle far longer than the delay: the three are not coming back
        await asyncio.wait_for(batcher.predict(np.array([[2.0]])), 10)

    asyncio.run(main())
    assert model.calls == [3, 1]


def test_full_queue_raises_queue_full() -> None:
    gate = threading.Event()
    model = DoublingModel(gate=gate)
    batcher = DynamicBatcher(model.predict, batch_size=1, max_batch_delay_ms=0, max_queue=2)

    async def main() -> None:
        running = asyncio.ensure_future(batcher.predict(np.array([[1.0]])))
        await asyncio.sleep(0.05)  # the first call is now blocked inside the model
        queued = [asyncio.ensure_future(batcher.predict(np.array([[1.0]]))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match=r"model model: request queue is full \(2 waiting\)"):
            await batcher.predict(np.array([[1.0]]))
        gate.set()
        await asyncio.gather(running, *queued)

    asyncio.run(main())
    assert model.calls == [1, 1, 1]


def test_one_bad_request_fails_alone() -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model.predict, batch_size=8, max_batch_delay_ms=50)

    async def main() -> list[Prediction | BaseException]:
        rows = [np.array([[1.0]]), np.array([[float("nan")]]), np.array([[3.0]])]
        return await asyncio.gather(*(batcher.predict(r) for r in rows), return_exceptions=True)

    good, bad, other = asyncio.run(main())
    assert isinstance(bad, ValueError) and "NaN in input" in str(bad)
    assert isinstance(good, Prediction) and good.prediction.tolist() == [2.0]
    assert isinstance(other, Prediction) and other.prediction.tolist() == [6.0]


def test_cheap_models_run_inline_after_the_first_measured_call() -> None:
    threads: list[str] = []

    def predict(rows: np.ndarray) -> Prediction:
        threads.append(threading.current_thread().name)
        return Prediction(prediction=rows[:, 0])

    batcher = DynamicBatcher(predict, inline_below_ms=1000.0)

    async def main() -> None:
        for _ in range(3):
            await batcher.predict(np.array([[1.0]]))

    asyncio.run(main())
    assert threads[0].startswith("predict-") and threads[1:] == [threading.main_thread().name] * 2


def test_close_answers_the_batch_in_flight_and_late_requests_still_work() -> None:
    gate = threading.Event()
    model = DoublingModel(gate=gate)
    batcher = DynamicBatcher(model.predict, batch_size=4, max_batch_delay_ms=0)

    async def main() -> list[float]:
        in_flight = asyncio.ensure_future(batcher.predict(np.array([[1.0]])))
        await asyncio.sleep(0.05)  # inside the model now
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # waits for the batch in flight
        gate.set()
        await closing
        late = await batcher.predict(np.array([[5.0]]))
        await batcher.close()
        return [*(await in_flight).prediction.tolist(), *late.prediction.tolist()]

    assert asyncio.run(main()) == [2.0, 10.0]


def test_a_request_larger_than_batch_size_is_predicted_in_calls_of_that_size() -> None:
    model = DoublingModel()
    observed: list[int] = []
    batcher = DynamicBatcher(
        model.predict, batch_size=32, max_batch_delay_ms=0, on_batch=lambda rows, _: observed.append(rows)
    )
    rows = np.arange(100, dtype=np.float64).reshape(-1, 1)

    async def main() -> Prediction:
        try:
            return await batcher.predict(rows)
        finally:
            await batcher.close()

    prediction = asyncio.run(main())
    assert model.calls == [32, 32, 32, 4] and observed == [32, 32, 32, 4]
    assert prediction.prediction.tolist() == (rows[:, 0] * 2).tolist()
    assert prediction.scores is not None and prediction.scores.shape == (100, 1)


def test_inline_or_thread_is_decided_from_the_batch_size() -> None:
    threads: list[str] = []

    def predict(rows: np.ndarray) -> Prediction:
        threads.append(threading.current_thread().name)
        return Prediction(prediction=rows[:, 0])

    batcher = DynamicBatcher(predict, batch_size=10_000, max_batch_delay_ms=0, inline_below_ms=0.5)

    async def main() -> None:
        try:
            await batcher.predict(np.zeros((1, 1)))  # unmeasured: a thread
            batcher._cost_per_row_ms = 0.001  # measured cheap per row
            await batcher.predict(np.zeros((10, 1)))  # 0.01 ms: inline
            await batcher.predict(np.zeros((5000, 1)))  # 5 ms at this size: a thread
        finally:
            await batcher.close()

    asyncio.run(main())
    assert threads[0].startswith("predict-") and threads[1] == "MainThread"
    assert threads[2].startswith("predict-")


def test_each_request_reports_how_long_it_waited_in_the_queue() -> None:
    gate = threading.Event()
    model = DoublingModel(gate=gate)
    now = [100.0]
    waits: list[float] = []
    batcher = DynamicBatcher(
        model.predict, batch_size=1, max_batch_delay_ms=0, clock=lambda: now[0], on_wait=waits.append
    )

    async def main() -> None:
        running = asyncio.ensure_future(batcher.predict(np.array([[1.0]])))
        await asyncio.sleep(0.05)  # the first call is now blocked inside the model
        queued = asyncio.ensure_future(batcher.predict(np.array([[2.0]])))
        await asyncio.sleep(0)
        now[0] += 0.25  # the second request waits a quarter second behind the first
        gate.set()
        await asyncio.gather(running, queued)

    asyncio.run(main())
    assert waits == [0.0, 0.25]


def test_scaled_workers_run_model_calls_at_once_and_zero_refuses() -> None:
    started = threading.Barrier(3, timeout=10)  # two model calls and the test meet here

    def predict(rows: np.ndarray) -> Prediction:
        started.wait()  # only returns when two calls run at the same time
        return Prediction(prediction=rows[:, 0])

    batcher = DynamicBatcher(predict, batch_size=1, max_batch_delay_ms=0, workers=2)

    async def main() -> list[Prediction]:
        calls = [asyncio.ensure_future(batcher.predict(np.array([[float(i)]]))) for i in range(2)]
        await asyncio.to_thread(started.wait)
        answers = await asyncio.gather(*calls)
        batcher.scale(0)
        with pytest.raises(NoWorkerError, match=r"model model has no worker to serve inference requests"):
            await batcher.predict(np.array([[1.0]]))
        await batcher.close()
        return answers

    assert [a.prediction.tolist() for a in asyncio.run(main())] == [[0.0], [1.0]]
