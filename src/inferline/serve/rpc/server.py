"""The gRPC servers: run beside the HTTP app, on its event loop, with the same `ServerState`.

Each module in `SERVICES` has `handler(state) -> grpc.GenericRpcHandler`; a new gRPC protocol
is one new module and one line here, as `ROUTE_MODULES` is for HTTP. TorchServe's two APIs
listen on ports of their own, as TorchServe's do (`TORCHSERVE_INFERENCE`,
`TORCHSERVE_MANAGEMENT`). Servicers raise `ApiError` like HTTP handlers do; `rpc_method`
(and `rpc_stream`, `rpc_bidi` for streaming RPCs) turns it into the gRPC status of the same
meaning, with the same message. With a token configured, state-changing RPCs need
`authorization: Bearer TOKEN` metadata, as the management API needs the header.

Example:
    >>> server = await start_grpc(state, "127.0.0.1:8081")  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from inferline.serve.http import ApiError
from inferline.serve.state import ServerState

log = logging.getLogger("inferline.serve")

SERVICES: tuple[str, ...] = ("inferline.serve.rpc.v2",)
TORCHSERVE_INFERENCE: tuple[str, ...] = ("inferline.serve.rpc.ts_inference",)
TORCHSERVE_MANAGEMENT: tuple[str, ...] = ("inferline.serve.rpc.ts_management",)

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}

Method = Callable[[Any, Any], Awaitable[Any]]
StreamMethod = Callable[[Any, Any], AsyncIterator[Any]]
StatusOf = Callable[[int], Any]  # an HTTP status code -> a grpc.StatusCode


def status_of(code: int) -> Any:
    """The gRPC status of the same meaning as HTTP status `code` (v2's mapping)."""
    return STATUS.get(code, grpc.StatusCode.INTERNAL)


async def start_grpc(state: ServerState, address: str, services: tuple[str, ...] = SERVICES) -> Any:
    """A started `grpc.aio.Server` serving `services` on `address`; `OSError` when it cannot bind."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", state.config.max_body),
            ("grpc.max_send_message_length", -1),
            # gRPC's default SO_REUSEPORT would let a second server share a busy port and
            # silently take half its calls; a busy port must fail instead.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(tuple(importlib.import_module(name).handler(state) for name in services))
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"gRPC: cannot listen on {address} ({exc})") from exc
    await server.start()
    return server


def rpc_method(method: Method, request_type: Any, codes: StatusOf = status_of) -> Any:
    """A unary gRPC method handler for `method(request, context)`; `ApiError` -> status."""

    async def call(request: Any, context: Any) -> Any:
        try:
            return await method(request, context)
        except ApiError as exc:
            await context.abort(codes(exc.code), exc.message)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=request_type.FromString, response_serializer=_serialize
    )


def rpc_stream(method: StreamMethod, request_type: Any, codes: StatusOf = status_of) -> Any:
    """A server-streaming method handler for the async generator `method(request, context)`."""
    return grpc.unary_stream_rpc_method_handler(
        _streaming(method, codes),
        request_deserializer=request_type.FromString,
        response_serializer=_serialize,
    )


def rpc_bidi(method: StreamMethod, request_type: Any, codes: StatusOf = status_of) -> Any:
    """A bidirectional method handler for `method(request_iterator, context)`."""
    return grpc.stream_stream_rpc_method_handler(
        _streaming(method, codes),
        request_deserializer=request_type.FromString,
        response_serializer=_serialize,
    )


def _streaming(method: StreamMethod, codes: StatusOf) -> StreamMethod:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for message in method(request, context):
                yield message
        except ApiError as exc:
            await context.abort(codes(exc.code), exc.message)

    return call


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def check_token(state: ServerState, context: Any, what: str) -> None:
    """Raise 401/403 unless the call carries the server's token (when it has one)."""
    token = state.config.token
    if token is None:
        return
    metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())}
    scheme, _, given = str(metadata.get("authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "Unauthorized", f"{what}: needs 'authorization: Bearer TOKEN' metadata")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "Forbidden", f"{what}: wrong token")
