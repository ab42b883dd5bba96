"""The gRPC server: runs beside the HTTP app, on its event loop, with the same `ServerState`.

Each module in `SERVICES` has `handler(state) -> grpc.GenericRpcHandler`; a new gRPC protocol
is one new module and one line here, as `ROUTE_MODULES` is for HTTP. Servicers raise
`ApiError` like HTTP handlers do; `rpc_method` turns it into the gRPC status of the same
meaning, with the same message. With a token configured, state-changing RPCs need
`authorization: Bearer TOKEN` metadata, as the management API needs the header.

Example:
    >>> server = await start_grpc(state, "127.0.0.1:8081")  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from inferline.serve.http import ApiError
from inferline.serve.state import ServerState

log = logging.getLogger("inferline.serve")

SERVICES: tuple[str, ...] = ("inferline.serve.rpc.v2",)

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


async def start_grpc(state: ServerState, address: str) -> Any:
    """A started `grpc.aio.Server` on `address`; raises `OSError` when it cannot bind."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", state.config.max_body),
            ("grpc.max_send_message_length", -1),
            # gRPC's default SO_REUSEPORT would let a second server share a busy port and
            # silently take half its calls; a busy port must fail instead.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(tuple(importlib.import_module(name).handler(state) for name in SERVICES))
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"gRPC: cannot listen on {address} ({exc})") from exc
    await server.start()
    return server


def rpc_method(method: Method, request_type: Any) -> Any:
    """A unary gRPC method handler for `method(request, context)`; `ApiError` -> status."""

    async def call(request: Any, context: Any) -> Any:
        try:
            return await method(request, context)
        except ApiError as exc:
            await context.abort(STATUS.get(exc.code, grpc.StatusCode.INTERNAL), exc.message)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )


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
