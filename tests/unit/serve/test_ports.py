"""PortSplit: each API answers on its own port; in-process calls (no socket port) pass."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.routing import Route

from inferline.serve.management import routes as management_routes
from inferline.serve.ports import PortSplit

PORTS = {"inference": 8080, "management": 8081, "metrics": 8082}


def call(path: str, port: int) -> tuple[int, Any]:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    routes: list[Any] = [*management_routes(), Route("/ping", app)]
    split = PortSplit(app, routes=routes, ports=PORTS)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "server": ("127.0.0.1", port), "headers": []}
    asyncio.run(split(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if reached == [] else reached


def test_each_api_on_its_port_and_in_process_calls_pass() -> None:
    assert call("/models/iris/all", 8081) == (200, ["/models/iris/all"])
    status, error = call("/models/iris/all", 8080)
    assert status == 404 and error["type"] == "ResourceNotFoundException"
    assert error["message"] == "GET /models/iris/all: the management API answers on port 8081"
    assert call("/metrics", 8082)[0] == 200 and call("/metrics", 8080)[0] == 404
    assert call("/ping", 8080)[0] == 200 and call("/ping", 8081)[0] == 404
    assert call("/models", 0) == (200, ["/models"])  # TorchServe's gRPC management, in process
