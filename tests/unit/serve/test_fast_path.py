"""PredictionsFastPath: which requests skip Starlette's stack, and that they answer as routed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.routing import Mount, Route

from inferline.models.base import LoadedModel, Prediction
from inferline.serve.app import InferlineApp, create_app
from inferline.serve.fast_path import PredictionsFastPath
from inferline.serve.state import ServerConfig, ServerState
from inferline.serve.torchserve import routes as torchserve_routes

PORTS = {"inference": 8080, "management": 8081}


def scope(method: str, path: str, port: int = 8080) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "server": ("127.0.0.1", port)}


async def endpoint(request: Any) -> Any:  # never called: only the route table matters here
    raise AssertionError


def test_matches_post_and_put_predictions_on_the_inference_port_only() -> None:
    fast = PredictionsFastPath(torchserve_routes(), ports=PORTS)
    assert fast.match(scope("POST", "/predictions/mnist")) == ("mnist", None)
    assert fast.match(scope("PUT", "/predictions/mnist/1.0")) == ("mnist", "1.0")
    assert fast.match(scope("POST", "/predictions/mnist", port=0)) == ("mnist", None)  # in-process
    for method, path, port in [
        ("GET", "/predictions/mnist", 8080),  # the router answers 405
        ("POST", "/predictions/mnist/", 8080),
        ("POST", "/predictions/a/b/c", 8080),
        ("POST", "/predictions/", 8080),
        ("POST", "/v2/models/mnist/infer", 8080),
        ("POST", "/predictions/mnist", 8081),  # the port split answers 404
    ]:
        assert fast.match(scope(method, path, port)) is None, (method, path, port)
    assert fast.match({"type": "lifespan"}) is None


def test_an_earlier_route_keeps_its_paths() -> None:
    vertex = Route("/predictions/vertex", endpoint, methods=["POST"])  # AIP_PREDICT_ROUTE may be any path
    fast = PredictionsFastPath([vertex, *torchserve_routes()])
    assert fast.match(scope("POST", "/predictions/vertex")) is None
    assert fast.match(scope("POST", "/predictions/mnist")) == ("mnist", None)
    mounted = PredictionsFastPath([Mount("/predictions", routes=[]), *torchserve_routes()])
    assert mounted.match(scope("POST", "/predictions/mnist")) is None


class SumHandler:
    """A fake framework: each row's sum; counts its calls."""

    framework = "fake"
    batch_size: int | None = None

    def __init__(self) -> None:
        self.calls = 0

    def load(self, uri: str) -> Any:
        return None

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        self.calls += 1
        return Prediction(prediction=inputs.sum(axis=1))


def served_app() -> tuple[InferlineApp, SumHandler]:
    handler = SumHandler()
    state = ServerState(ServerConfig())
    state.models.add(LoadedModel(name="sum", version="1", uri="mem://sum", handler=handler, model=None))
    app = create_app(state)
    assert isinstance(app, InferlineApp) and app.fast_path is not None
    return app, handler


def post_all(app: InferlineApp, requests: list[tuple[str, str, bytes]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.request(method, path, content=body) for method, path, body in requests]

    return asyncio.run(main())


def test_answers_errors_and_metrics_are_the_routed_ones() -> None:
    requests = [
        ("POST", "/predictions/sum", b"[[1, 2], [3, 4]]"),
        ("PUT", "/predictions/sum/1", b"[5, 6]"),
        ("POST", "/predictions/sum", b"[1, "),  # malformed JSON: 400
        ("POST", "/predictions/nope", b"[1]"),  # unknown model: 404
        ("GET", "/predictions/sum", b""),  # not the fast path's: the router's 405
    ]
    fast_app, fast_model = served_app()
    routed_app, routed_model = served_app()
    routed_app.fast_path = None
    fast, routed = post_all(fast_app, requests), post_all(routed_app, requests)
    assert [r.status_code for r in fast] == [200, 200, 400, 404, 405]
    for a, b in zip(fast, routed, strict=True):
        assert (a.status_code, a.content, a.headers.get("content-type")) == (
            b.status_code,
            b.content,
            b.headers.get("content-type"),
        )
        assert a.headers.get("x-model-id") == b.headers.get("x-model-id")
    assert fast[0].json() == {"model_id": "sum/1", "predictions": [3.0, 7.0]}
    assert fast[2].json()["type"] == "BadRequestException"
    assert fast_model.calls == routed_model.calls == 2
    metrics = post_all(fast_app, [("GET", "/metrics", b"")])[0].text
    assert 'inferline_requests_total{model="sum",status="200"} 2.0' in metrics


def test_an_unexpected_failure_is_a_json_500(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("inferline.serve.torchserve.predictions", broken)
    app, _ = served_app()
    answer = post_all(app, [("POST", "/predictions/sum", b"[1, 2]")])[0]
    assert answer.status_code == 500
    assert answer.json()["type"] == "InternalServerException"
    assert "RuntimeError: boom" in answer.json()["message"]
