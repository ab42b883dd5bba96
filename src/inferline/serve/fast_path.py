"""TorchServe's predictions route without Starlette's per-request machinery: the hot path.

`POST|PUT /predictions/{name}[/{version}]` is nearly all of a busy server's traffic. Routed
through Starlette it passes five middleware layers, the router's match over every route and
an exception wrapper before reaching its endpoint: about 7-10% of the server's CPU per request
for a small image model. `PredictionsFastPath` recognises those requests from the ASGI scope
and calls the same endpoint (`inferline.serve.torchserve.predictions`) directly, so bodies,
content types, answers, metrics and JSON errors are the routed ones by construction.

The server's own HTTP protocol (`inferline.serve.protocol`) asks `match_path` before building
any ASGI scope and answers those requests itself; this ASGI-level fast path still serves them
when another protocol (h11, a test client) drives the app.

Everything else goes through Starlette: other paths and methods (405 and 404 answers are the
router's), a request on another port of TorchServe's port split (`serve/ports.py` answers it
404), and a path an earlier route claims (Vertex AI's routes come first and may be any path).

Example:
    >>> fast = PredictionsFastPath(routes, ports={"inference": 8080, "management": 8081})
    >>> fast.match({"type": "http", "method": "PUT", "path": "/predictions/mnist/1.0", "server": None})
    ('mnist', '1.0')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from inferline.serve import torchserve
from inferline.serve.state import unexpected_error

log = logging.getLogger("inferline.serve")

PREFIX = "/predictions/"
# Starlette's `{name}` matches one path segment, `[^/]+`, as here.
PATH = re.compile(r"/predictions/([^/]+)(?:/([^/]+))?")
METHODS = frozenset({"POST", "PUT"})
MATCHES_KEPT = 1024


class PredictionsFastPath:
    """Matches TorchServe's predictions requests that no earlier route or other port claims."""

    def __init__(self, routes: Sequence[BaseRoute], *, ports: dict[str, int] | None = None) -> None:
        self.inference_port = ports["inference"] if ports else None
        self.claimed: list[re.Pattern[str]] = []
        self.enabled = True
        self._matched: dict[tuple[str, str, int | None], tuple[str, str | None] | None] = {}
        for route in routes:
            if isinstance(route, Route) and route.endpoint is torchserve.predictions:
                break  # the predictions routes themselves: later routes cannot claim their paths
            if isinstance(route, Route):
                self.claimed.append(route.path_regex)
            else:  # a mount or host route could claim anything: route every request
                self.enabled = False
        else:  # no predictions route to answer for
            self.enabled = False

    def match(self, scope: Scope) -> tuple[str, str | None] | None:
        """`(name, version)` when the fast path answers this request, else None."""
        if scope["type"] != "http":
            return None
        server = scope.get("server") or ("", 0)
        return self.match_path(scope["method"], scope["path"], server[1])

    def match_path(self, method: str, path: str, port: int | None) -> tuple[str, str | None] | None:
        """`(name, version)` when the fast path answers `method path` arriving on `port`
        (remembered: a server sees few distinct paths, and this runs per request)."""
        key = (method, path, port)
        try:
            return self._matched[key]
        except KeyError:
            pass
        if len(self._matched) >= MATCHES_KEPT:  # paths from clients: keep the memory bounded
            self._matched.clear()
        found = self._matched[key] = self._match_path(method, path, port)
        return found

    def _match_path(self, method: str, path: str, port: int | None) -> tuple[str, str | None] | None:
        if method not in METHODS or not self.enabled or not path.startswith(PREFIX):
            return None
        found = PATH.fullmatch(path)
        if found is None:
            return None
        if self.inference_port is not None and port and port != self.inference_port:
            return None  # the port split answers it: predictions live on the inference port
        if any(regex.match(path) for regex in self.claimed):
            return None
        return found.group(1), found.group(2)

    async def answer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        """Answer the request as the routed endpoint would; `scope["app"]` is the Starlette app."""
        params: dict[str, Any] = {"name": name} if version is None else {"name": name, "version": version}
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response: Response = await torchserve.predictions(request)
        except Exception as exc:  # what Starlette's exception middleware would answer
            response = await unexpected_error(request, exc)
        if response.background is not None or type(response).__call__ is not Response.__call__:
            await response(scope, receive, send)
            return
        # What `Response.__call__` sends, without its coroutine frame (it is this request's hot path).
        headers = response.raw_headers
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
