"""The app in-process: a full queue answers 503 with Retry-After, and the server recovers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import numpy as np

from inferline.models.base import LoadedModel, Prediction
from inferline.serve.app import create_app, event_loop
from inferline.serve.models import BatchSettings
from inferline.serve.state import ServerConfig, ServerState


class GatedHandler:
    """A fake framework handler whose predictions wait for a gate; counts its calls."""

    framework = "fake"
    batch_size = None

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.calls = 0

    def load(self, uri: str) -> Any:
        return None

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        self.gate.wait(5)
        self.calls += 1
        return Prediction(prediction=inputs.sum(axis=1))


def test_full_queue_answers_503_with_retry_after() -> None:
    gate = threading.Event()
    handler = GatedHandler(gate)
    config = ServerConfig(settings=BatchSettings(batch_size=1, max_batch_delay_ms=0, max_queue=1))
    state = ServerState(config)
    state.models.add(LoadedModel(name="sum", version="1", uri="mem://sum", handler=handler, model=None))
    app = create_app(state)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.ensure_future(client.post("/predictions/sum", json=[1, 2]))
            await asyncio.sleep(0.1)  # first is inside the model now
            second = asyncio.ensure_future(client.post("/predictions/sum", json=[3, 4]))
            await asyncio.sleep(0.1)  # second fills the one-slot queue
            third = await client.post("/predictions/sum", json=[5, 6])
            gate.set()
            answered = [await first, await second]
            after = await client.post("/predictions/sum", json=[7, 8])
            metrics = await client.get("/metrics")
            return [*answered, third, after, metrics]

    first, second, third, after, metrics = asyncio.run(main())
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert third.json() == {
        "code": 503,
        "type": "ServiceUnavailableException",
        "message": "model sum/1: request queue is full (1 waiting); retry shortly",
    }
    assert [r.json()["predictions"] for r in (first, second, after)] == [[3.0], [7.0], [15.0]]
    assert 'inferline_requests_total{model="sum",status="503"} 1.0' in metrics.text
    assert handler.calls == 3


def test_uvloop_unless_a_grpc_server_shares_the_loop() -> None:
    assert event_loop(ServerConfig()) == "auto"  # uvicorn's choice: uvloop when installed
    assert event_loop(ServerConfig(grpc_address="127.0.0.1:8081")) == "asyncio"
    assert event_loop(ServerConfig(ts_grpc_address="127.0.0.1:7070")) == "asyncio"
