"""One server's state (config, models, metrics, store) and the request path shared by protocols.

Protocol modules (`torchserve`, `v2`) only parse bodies into row arrays and format
predictions; `ServerState.infer` does the rest the same way for both: resolve the model
version, read the body under the size limit, batch, time, count, and turn every failure into
a JSON error so the server keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from inferline.models.base import Prediction
from inferline.serve.batching import QueueFullError
from inferline.serve.http import ApiError, json_response, read_body
from inferline.serve.metrics import ServerMetrics
from inferline.serve.models import BatchSettings, ServedModels, ServedVersion

log = logging.getLogger("inferline.serve")

Parse = Callable[[bytes, Request, ServedVersion], tuple[np.ndarray, Any]]
Render = Callable[[ServedVersion, Prediction, Any], Any]


@dataclass(frozen=True)
class ServerConfig:
    """Server options; `token` guards the management API.

    `allow_origins` are web page origins allowed to manage models; `loopback_only` makes
    management refuse non-loopback `Host` headers (set when the server binds loopback).
    """

    token: str | None = None
    allow_origins: tuple[str, ...] = ()
    loopback_only: bool = False
    max_body: int = 16 * 2**20
    settings: BatchSettings = field(default_factory=BatchSettings)
    watch_interval: float = 1.0
    retry_after_s: int = 1


class ServerState:
    """Everything a route needs: `request.app.state.server` in handlers."""

    def __init__(self, config: ServerConfig, *, store: Any | None = None) -> None:
        from inferline.serve.catalog import StoreCatalog

        self.config = config
        self.metrics = ServerMetrics()
        self.models = ServedModels(self.metrics, settings=config.settings)
        self.catalog = StoreCatalog(store, self.models) if store is not None else None
        self.ready = False

    async def resolve(self, name: str, version: str | None) -> ServedVersion:
        """The version to answer with; a stored but not yet loaded version is loaded now."""
        try:
            return self.models.get(name, version)
        except ApiError:
            if version is None or self.catalog is None:
                raise
            return await self.catalog.load_version(name, version)

    async def infer(
        self, request: Request, name: str, version: str | None, parse: Parse, render: Render
    ) -> Response:
        start = time.perf_counter()
        label = name
        status = 500
        try:
            served = self.models.get(name, version) if version is None else await self.resolve(name, version)
            served.batcher.expect()
            try:
                body = await read_body(request, self.config.max_body)
                rows, context = parse(body, request, served)
            except BaseException:
                served.batcher.unexpect()
                raise
            prediction = await served.predict(rows, expected=True)
            response = json_response(
                render(served, prediction, context), headers={"X-Model-Id": served.model_id}
            )
            status = 200
            return response
        except ApiError as exc:
            status = exc.code
            if status == 404:
                label = ""  # unknown names must not grow the metrics' label sets
            return exc.response()
        except QueueFullError as exc:
            status = 503
            return ApiError(
                503, "ServiceUnavailable", str(exc), headers={"Retry-After": str(self.config.retry_after_s)}
            ).response()
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.warning("model %s: prediction failed: %s: %s", name, type(exc).__name__, exc)
            status = 500
            return ApiError(
                500, "ModelError", f"model {name}: prediction failed ({type(exc).__name__}: {first_line})"
            ).response()
        finally:
            self.metrics.request(label, status, time.perf_counter() - start if status == 200 else None)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("route %s failed", request.url.path)
    return ApiError(500, "InternalServerError", f"{request.url.path}: {type(exc).__name__}: {exc}").response()


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


Handler = Callable[[Request], Awaitable[Response]]


def server_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state
