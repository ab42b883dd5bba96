"""The ASGI app: the route table of every protocol module, JSON errors, and the store watcher.

Each module in `ROUTE_MODULES` has `routes() -> list[BaseRoute]`; a new protocol or page (a
dashboard at `GET /`) is one new module and one line here. Handlers reach the server state
as `request.app.state.server` (`inferline.serve.state.server_of`).

Example:
    >>> state = ServerState(ServerConfig(), store=ModelStore("model_store"))  # doctest: +SKIP
    >>> uvicorn.run(create_app(state), port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.metadata
import logging
import re
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from inferline.serve.fast_path import PredictionsFastPath
from inferline.serve.http import ApiError, error_response
from inferline.serve.metrics import CONTENT_TYPE
from inferline.serve.peer_metrics import merge
from inferline.serve.ports import PortSplit
from inferline.serve.state import ServerConfig, ServerState, api_error, server_of, unexpected_error

log = logging.getLogger("inferline.serve")

ROUTE_MODULES: tuple[str, ...] = (
    "inferline.serve.vertex",  # first: Vertex AI's routes (from its variables) may be any path
    "inferline.serve.torchserve",
    "inferline.serve.v2",
    "inferline.serve.management",
    "inferline.serve.dashboard",
    "inferline.serve.openapi",
)

__all__ = [
    "ROUTE_MODULES",
    "ServerConfig",
    "ServerState",
    "create_app",
    "event_loop",
    "freeze_heap",
    "http_protocol",
]


async def metrics(request: Request) -> Response:
    state = server_of(request)
    if state.peers is None:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)
    texts, missing = await state.offload.thread(state.peers.ask)
    return Response(merge([state.metrics.render(), *texts], missing=missing), media_type=CONTENT_TYPE)


# TorchServe's exception names for the errors routing itself answers (its clients read `type`).
ROUTING_ERRORS = {
    400: "BadRequestException",
    404: "ResourceNotFoundException",
    405: "MethodNotAllowedException",
    408: "RequestTimeoutException",
}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    name = ROUTING_ERRORS.get(exc.status_code) or HTTPStatus(exc.status_code).phrase.replace(" ", "")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 404:
        message += "; see /predictions/{name}, /v2/models/{name}/infer, /models, /metrics"
    error = ApiError(exc.status_code, name, message, headers=dict(exc.headers or {}))
    return error_response(error, request.url.path)


def all_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route("/metrics", metrics, methods=["GET"])]
    for module_name in ROUTE_MODULES:
        routes.extend(importlib.import_module(module_name).routes())
    return routes


def event_loop(config: ServerConfig) -> str:
    """uvicorn's `loop`: uvloop (when installed) unless a gRPC server shares the loop.

    uvloop's transports and callbacks cost ~25% less CPU per request (a small .mar model); grpc.aio is
    made for asyncio's own loop."""
    grpc = config.grpc_address or config.ts_grpc_address or config.ts_grpc_management_address
    return "asyncio" if grpc else "auto"


# The uvicorn releases whose httptools protocol `InferenceProtocol` was written against and
# tested with (it drives that class's internals, which change between releases: 0.45's
# keep-alive and header handling differ from 0.54's). Outside, uvicorn's own protocol serves
# every request through the ASGI app: the same answers, ~70 us more CPU per prediction.
PROTOCOL_RELEASES = ((0, 53), (0, 55))  # from, up to (not included)


def http_protocol(uvicorn_version: str | None = None) -> Any:
    """uvicorn's `http`: its httptools protocol answering TorchServe's predictions itself
    (`inferline.serve.protocol`); uvicorn's own choice when httptools is missing or uvicorn
    is a release the subclass was not made for."""
    version = uvicorn_version or importlib.metadata.version("uvicorn")
    release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    first, stop = PROTOCOL_RELEASES
    if not first <= release < stop:
        log.debug("uvicorn %s: predictions through the ASGI app (own protocol: %s)", version, first)
        return "auto"
    try:
        from inferline.serve.protocol import InferenceProtocol
    except ImportError:
        return "auto"
    return InferenceProtocol


def freeze_heap() -> None:
    """Put every object alive now (libraries, loaded models) out of the cyclic collector's sight.

    Called once the models are loaded, before serving: a full collection then scans only what
    serving created instead of millions of long-lived objects, so it no longer stalls every
    request for ~0.3 s (it set the p99 under load). Objects frozen are never collected as
    cycles, which is why only a server process calls this, not `create_app`.
    """
    gc.collect()
    gc.freeze()


async def start_rpc(state: ServerState) -> list[Any]:
    """The gRPC servers: v2 on `config.grpc_address` (skipped when busy and not required),
    TorchServe's inference and management APIs on theirs."""
    config = state.config
    if not (config.grpc_address or config.ts_grpc_address or config.ts_grpc_management_address):
        return []
    from inferline.serve.rpc import server as rpc

    servers = []
    try:
        if config.grpc_address:
            try:
                servers.append(await rpc.start_grpc(state, config.grpc_address))
            except OSError as exc:
                if config.grpc_required:
                    raise
                log.warning("%s; serving HTTP only (pick a port with --grpc-port, 0 turns gRPC off)", exc)
        if config.ts_grpc_address:
            servers.append(await rpc.start_grpc(state, config.ts_grpc_address, rpc.TORCHSERVE_INFERENCE))
        if config.ts_grpc_management_address:
            address = config.ts_grpc_management_address
            servers.append(await rpc.start_grpc(state, address, rpc.TORCHSERVE_MANAGEMENT))
    except BaseException:
        for server in servers:
            await server.stop(grace=None)
        raise
    return servers


class InferlineApp(Starlette):
    """Starlette with TorchServe's predictions answered before its middleware and router
    (`inferline.serve.fast_path`); every other request is routed as usual."""

    fast_path: PredictionsFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        found = fast.match(scope) if fast is not None else None
        if fast is None or found is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await fast.answer(scope, receive, send, *found)


def create_app(state: ServerState) -> Starlette:
    """The server's app; the store watcher runs while the app is up."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = None
        servers = await start_rpc(state)
        if state.catalog is not None and state.config.watch_interval > 0:
            watcher = asyncio.create_task(state.catalog.watch(state.config.watch_interval))
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            for server in servers:
                await server.stop(grace=1.0)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await state.models.close()
            state.offload.close()

    routes = all_routes()
    middleware = []
    if state.config.ports is not None:
        middleware.append(Middleware(PortSplit, routes=routes, ports=state.config.ports))
    app = InferlineApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.server = state
    app.fast_path = PredictionsFastPath(routes, ports=state.config.ports)
    return app
