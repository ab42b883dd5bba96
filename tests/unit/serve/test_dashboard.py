"""The dashboard routes in-process: the page, and stats of loaded models and recent requests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from inferline.models.base import LoadedModel, Prediction
from inferline.serve.app import create_app
from inferline.serve.state import ServerConfig, ServerState


class SumHandler:
    framework = "fake"
    batch_size = None

    def load(self, uri: str) -> Any:
        return None

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        return Prediction(prediction=inputs.sum(axis=1))


def _get(state: ServerState, *requests: tuple[str, str, Any]) -> list[httpx.Response]:
    app = create_app(state)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.request(method, url, json=body) for method, url, body in requests]

    return asyncio.run(main())


def test_stats_list_loaded_versions_and_count_requests() -> None:
    state = ServerState(ServerConfig())
    for version in ("1", "2", "10"):
        state.models.add(
            LoadedModel(name="sum", version=version, uri="mem://sum", handler=SumHandler(), model=None),
            default=version == "2",
        )
    answers = _get(
        state,
        ("POST", "/predictions/sum", [[1, 2], [3, 4]]),
        ("POST", "/predictions/sum", [5, 6]),
        ("POST", "/predictions/nope", [1]),
        ("GET", "/dashboard/stats?window=60", None),
        ("GET", "/", None),
    )
    assert [a.status_code for a in answers] == [200, 200, 404, 200, 200]
    stats = answers[3].json()
    assert stats["loaded"] == [
        {
            "name": "sum",
            "versions": ["1", "2", "10"],
            "default": "2",
            "model_ids": ["sum/1", "sum/2", "sum/10"],
        }
    ]
    assert stats["window_s"] == 60 and len(stats["series"]) == 60
    assert stats["totals"]["requests"] == 3 and stats["totals"]["errors"] == 1
    assert stats["totals"]["batch_rows"] == 3 and stats["models"]["sum"]["requests"] == 2
    assert stats["totals"]["p50_ms"] > 0
    page = answers[4]
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="requests-total"' in page.text and "/dashboard/stats" in page.text
    assert "<script src" not in page.text and "https://" not in page.text


def test_a_bad_window_is_a_400_naming_the_range() -> None:
    (answer,) = _get(ServerState(ServerConfig()), ("GET", "/dashboard/stats?window=abc", None))
    assert answer.status_code == 400
    assert "window='abc'; expected whole seconds from 1 to 3600" in answer.text
