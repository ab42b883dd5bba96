"""TorchServe's port split: inference, management and metrics each answer on their own port.

With `--management-port`/`--metrics-port` (or `--ts-config` addresses) the server listens on
several sockets; `PortSplit` answers a request only on the port of its API, else 404
`ResourceNotFoundException` naming the right port. Management is every route behind the
management guard (`/models...`, v2's repository), found from the route table, so a new guarded
route is covered without being listed here. A request with no socket port (server port 0, an
in-process call such as TorchServe's gRPC management) is not a socket's and passes.

Example:
    >>> ports = {"inference": 8080, "management": 8081, "metrics": 8082}
    >>> app = PortSplit(app, routes=routes, ports=ports)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inferline.serve.http import ApiError, error_response

METRICS = "/metrics"
SEEN_PATHS = 4096  # paths whose API is remembered (bounded: clients choose paths)


def is_management(endpoint: Any) -> bool:
    return bool(getattr(endpoint, "management", False))


class PortSplit:
    """ASGI middleware sending each API's requests to its own port only."""

    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute], ports: dict[str, int]) -> None:
        self.app = app
        self.ports = ports
        self.management: list[re.Pattern[str]] = [
            route.path_regex for route in routes if isinstance(route, Route) and is_management(route.endpoint)
        ]
        self._seen: dict[str, str] = {}

    def api_of(self, path: str) -> str:
        api = self._seen.get(path)
        if api is None:
            api = self._api_of(path)
            if len(self._seen) < SEEN_PATHS:  # matching every management route per request costs
                self._seen[path] = api  # more than a whole small model call
        return api

    def _api_of(self, path: str) -> str:
        if path == METRICS:
            return "metrics"
        if any(regex.match(path) for regex in self.management):
            return "management"
        return "inference"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or ("", 0)
        if scope["type"] == "http" and server[1]:
            api = self.api_of(scope["path"])
            wanted = self.ports.get(api, self.ports["inference"])
            if server[1] != wanted:
                message = f"{scope['method']} {scope['path']}: the {api} API answers on port {wanted}"
                response = error_response(ApiError(404, "ResourceNotFoundException", message), scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
