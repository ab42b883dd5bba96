"""One server's state (config, models, metrics, store) and the request path shared by protocols.

Protocol modules (`torchserve`, `v2` over HTTP, `rpc.v2` over gRPC) only turn requests into
row arrays and predictions into answers; `ServerState.handle` does the rest the same way for
all of them: resolve the model version, batch, time, count, and turn every failure into an
`ApiError` (answered as JSON by `infer` for HTTP, as a gRPC status by the gRPC servicers) so
the server keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from inferline.models.base import Prediction
from inferline.models.mar import FRAMEWORK as MAR
from inferline.serve.answers import encode_answer, warning_header
from inferline.serve.batching import QueueFullError
from inferline.serve.http import JSON, ApiError, error_response, invalid_input, read_body
from inferline.serve.metrics import ServerMetrics
from inferline.serve.models import DEFAULT_MAX_IMAGE_PIXELS, BatchSettings, ServedModels, ServedVersion
from inferline.serve.offload import THREAD_BODY_BYTES, Offload
from inferline.serve.peer_metrics import PeerMetrics

log = logging.getLogger("inferline.serve")

THREAD_ANSWER_ROWS = 2048  # answers with this many rows are rendered and encoded on a worker thread

Parse = Callable[[bytes, Request, ServedVersion], tuple[np.ndarray, Any]]
Render = Callable[[ServedVersion, Prediction, Any], Any]
Decode = Callable[[ServedVersion], Awaitable[tuple[np.ndarray, Any]]]
Encode = Callable[[ServedVersion, Prediction, Any], Any]


@dataclass(frozen=True)
class ServerConfig:
    """Server options; `token` guards the management API (and gRPC's repository RPCs).

    `allow_origins` are web page origins allowed to manage models; `loopback_only` makes
    management refuse non-loopback `Host` headers (set when the server binds loopback).
    `grpc_address` ("127.0.0.1:8081") starts the gRPC server with the app; when it cannot
    bind, the app fails to start if `grpc_required`, else serves HTTP only and logs why.
    `ts_grpc_address` and `ts_grpc_management_address` start TorchServe's gRPC inference and
    management APIs (each on its own port, as TorchServe does); they must bind.
    """

    token: str | None = None
    allow_origins: tuple[str, ...] = ()
    loopback_only: bool = False
    grpc_address: str | None = None
    grpc_required: bool = False
    ts_grpc_address: str | None = None
    ts_grpc_management_address: str | None = None
    max_body: int = 16 * 2**20
    settings: BatchSettings = field(default_factory=BatchSettings)
    watch_interval: float = 1.0
    retry_after_s: int = 1
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    warehouse: str | None = None  # a DuckDB file whose table counts the dashboard shows
    # TorchServe's port split: {"inference": 8080, "management": 8081, "metrics": 8082}; None: one port.
    ports: dict[str, int] | None = None
    model_settings: dict[str, BatchSettings] = field(default_factory=dict)  # per model (--ts-config)


class ServerState:
    """Everything a route needs: `request.app.state.server` in handlers."""

    def __init__(self, config: ServerConfig, *, store: Any | None = None) -> None:
        from inferline.serve.catalog import StoreCatalog
        from inferline.serve.warehouse import WarehouseCounts

        self.config = config
        self.metrics = ServerMetrics()
        self.models = ServedModels(
            self.metrics,
            settings=config.settings,
            max_image_pixels=config.max_image_pixels,
            per_model=config.model_settings,
        )
        self.catalog = StoreCatalog(store, self.models) if store is not None else None
        self.offload = Offload()
        self.warehouse = WarehouseCounts(config.warehouse) if config.warehouse else None
        self.ready = False
        self.peers: PeerMetrics | None = None  # the other processes' metrics (serve --processes N)
        self._background: set[asyncio.Task[Any]] = set()

    def background(self, work: Awaitable[Any]) -> None:
        """Run `work` after answering (e.g. scaling workers); a failure is logged."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def resolve(self, name: str, version: str | None) -> ServedVersion:
        """The version to answer with; a stored but not yet loaded version is loaded now."""
        try:
            return self.models.get(name, version)
        except ApiError:
            if version is None or self.catalog is None:
                raise
            return await self.catalog.load_version(name, version)

    async def handle(self, name: str, version: str | None, decode: Decode, encode: Encode) -> Any:
        """The request path every protocol shares; raises `ApiError` for every failure.

        `decode(served)` turns the request into rows (the batcher knows a request is being
        received meanwhile), the rows are predicted in a batch, and `encode(served,
        prediction, context)` builds the answer (or an awaitable of it). Each call is counted and
        timed by model.
        """
        start = time.perf_counter()
        label = name
        status = 500
        try:
            served = self.models.get(name, version) if version is None else await self.resolve(name, version)
            served.batcher.expect()
            try:
                rows, context = await decode(served)
            except BaseException:
                served.batcher.unexpect()
                raise
            prediction = await served.predict(rows, expected=True)
            answer = encode(served, prediction, context)
            if inspect.isawaitable(answer):
                answer = await answer
            status = 200
            return answer
        except ApiError as exc:
            status = exc.code
            if status == 404:
                label = ""  # unknown names must not grow the metrics' label sets
            raise
        except (asyncio.CancelledError, ClientDisconnect):
            status = 499  # the client went away (a cancelled gRPC call, a closed connection)
            raise
        except QueueFullError as exc:
            status = 503
            raise ApiError(
                503,
                "ServiceUnavailableException",
                str(exc),
                headers={"Retry-After": str(self.config.retry_after_s)},
            ) from exc
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.warning("model %s: prediction failed: %s: %s", name, type(exc).__name__, exc)
            code = getattr(exc, "error_code", None)
            if isinstance(code, int) and 400 <= code <= 599:
                # A TorchServe handler's `PredictionException(message, error_code)`: its status.
                status = code
                message = str(getattr(exc, "message", None) or first_line)
                raise ApiError(code, "InternalServerException", f"model {name}: {message}") from exc
            status = 500
            raise ApiError(
                500,
                "InternalServerException",
                f"model {name}: prediction failed ({type(exc).__name__}: {first_line})",
            ) from exc
        finally:
            self.metrics.request(label, status, time.perf_counter() - start if status == 200 else None)

    async def infer(
        self, request: Request, name: str, version: str | None, parse: Parse, render: Render
    ) -> Response:
        """`handle` for an HTTP request: the body read under `max_body`, errors as JSON."""

        async def decode(served: ServedVersion) -> tuple[np.ndarray, Any]:
            body = await read_body(request, self.config.max_body)
            return await self._parse(parse, body, request, served)

        async def encode(served: ServedVersion, prediction: Prediction, context: Any) -> Response:
            if len(prediction.prediction) >= THREAD_ANSWER_ROWS:
                response = await self.offload.thread(_answer, render, served, prediction, context)
            else:
                response = _answer(render, served, prediction, context)
            response.headers["X-Model-Id"] = served.model_id
            return response

        try:
            response: Response = await self.handle(name, version, decode, encode)
            return response
        except ApiError as exc:
            return error_response(exc, request.url.path)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody to send it to: uvicorn drops it

    async def _parse(
        self, parse: Parse, body: bytes, request: Request, served: ServedVersion
    ) -> tuple[np.ndarray, Any]:
        media = request.headers.get("content-type", "")
        return await self.parse_body(lambda: parse(body, request, served), len(body), media, served)

    async def parse_body(
        self, parse: Callable[[], tuple[np.ndarray, Any]], size: int, content_type: str, served: ServedVersion
    ) -> tuple[np.ndarray, Any]:
        """`parse()` a body of `size` bytes: on the loop when small, on a worker thread when large
        or an image; a failure no check foresaw is a 422 naming the model."""

        def run() -> tuple[np.ndarray, Any]:
            try:
                return parse()
            except (ValueError, TypeError, OverflowError, RecursionError, LookupError) as exc:
                # A body no check foresaw is still the client's input, not a server failure.
                log.warning("model %s: unreadable request body", served.model_id, exc_info=True)
                first_line = (str(exc).strip().splitlines() or [""])[0]
                reason = f"{type(exc).__name__}: {first_line}"
                raise invalid_input(
                    f"model {served.model_id}: cannot read the request body ({reason})"
                ) from exc

        # Images (image/*, raw bytes, forms) decode on a worker thread. A small body for a
        # TorchServe handler is only wrapped here (its handler decodes it, on the batch's
        # thread): a thread hop would cost more than the work.
        media = content_type.split(";", 1)[0].strip().lower()
        if served.framework == MAR and size < THREAD_BODY_BYTES and not media.startswith("multipart/"):
            return run()
        if size >= THREAD_BODY_BYTES or media != "application/json":
            return await self.offload.thread(run)
        return run()


def _answer(render: Render, served: ServedVersion, prediction: Prediction, context: Any) -> Response:
    """The rendered answer as a response; JSON is encoded in slices, NaN/Infinity as null."""
    answer = render(served, prediction, context)
    if isinstance(answer, Response):
        return answer
    data, replaced = encode_answer(answer)
    if replaced:
        log.warning("model %s: %d non-finite outputs sent as null", served.model_id, replaced)
    return Response(data, media_type=JSON, headers=warning_header(served.model_id, replaced))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("route %s failed", request.url.path)
    error = ApiError(500, "InternalServerException", f"{request.url.path}: {type(exc).__name__}: {exc}")
    return error_response(error, request.url.path)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, request.url.path)


Handler = Callable[[Request], Awaitable[Response]]


def server_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state
