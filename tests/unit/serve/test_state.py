"""The shared request path: a call the client cancels is counted as 499, not as a server failure."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from inferline.models.base import LoadedModel, Prediction
from inferline.models.sklearn import SklearnHandler
from inferline.serve.models import ServedVersion
from inferline.serve.state import ServerConfig, ServerState


def test_a_cancelled_call_is_counted_as_499_and_the_batcher_forgets_it() -> None:
    state = ServerState(ServerConfig())
    model = DummyClassifier().fit(np.zeros((2, 1)), [0, 1])
    served = state.models.add(LoadedModel("m", "1", "mem://m", SklearnHandler(), model))
    started = asyncio.Event()

    async def decode(version: ServedVersion) -> tuple[np.ndarray, Any]:
        started.set()
        await asyncio.sleep(3600)  # a client that never finishes sending
        raise AssertionError("not reached")

    def encode(version: ServedVersion, prediction: Prediction, context: Any) -> Any:
        return prediction

    async def go() -> None:
        task = asyncio.create_task(state.handle("m", None, decode, encode))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    text = state.metrics.render().decode()
    assert 'inferline_requests_total{model="m",status="499"} 1.0' in text
    assert 'status="500"' not in text
    assert served.batcher._arriving == 0  # noqa: SLF001 - no phantom request keeps batches waiting
