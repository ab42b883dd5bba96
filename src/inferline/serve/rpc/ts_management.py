"""TorchServe's gRPC management API (`management.proto`), answered by the REST management routes.

TorchServe's gRPC management is its REST management API with the query and path parameters
as message fields (TorchServe tests both with one table of cases), and its `msg` is what REST
answers: the JSON for DescribeModel and ListModels, the `status` sentence for the others. So
each RPC here becomes the REST request it stands for, run in-process through
`serve/management.py`'s routes: the same rules (409 for a version registered twice, 404/403 on
unregister, trusted paths for archives that run code, pagination, worker scaling) and the same
messages, whatever REST learns later. Errors become TorchServe's gRPC status codes.

With a token configured every RPC needs `authorization: Bearer TOKEN` metadata (what
TorchServe's `torchserve_grpc_client.py --auth-token` sends). The server binds this API to
127.0.0.1 unless told otherwise (`--ts-grpc-management-host`, which then needs --token).

Example:
    >>> stub.DescribeModel(DescribeModelRequest(model_name="mnist"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, unquote, urlencode

import grpc
from starlette.applications import Starlette

from inferline.serve import management
from inferline.serve.http import ApiError
from inferline.serve.rpc.proto import torchserve_management_pb2 as pb
from inferline.serve.rpc.server import check_token, rpc_method
from inferline.serve.rpc.ts_status import TS_PREFIX, ts_status
from inferline.serve.state import ServerState, api_error, unexpected_error

SERVICE = f"{TS_PREFIX}.management.ManagementAPIsService"  # the public name (see the .proto)

Query = dict[str, str]


class ManagementServicer:
    """The RPCs of TorchServe's `ManagementAPIsService`, each named as in the .proto."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.app = Starlette(
            routes=management.routes(),
            exception_handlers={ApiError: api_error, Exception: unexpected_error},
        )
        self.app.state.server = state

    async def DescribeModel(self, request: Any, context: Any) -> Any:  # noqa: N802 (the .proto's names)
        if request.customized:
            raise ApiError(501, "NotImplemented", "DescribeModel: customized=true (a handler's "
                           "describe_handle metadata) is not supported; describe without it")  # fmt: skip
        path = model_path(request.model_name, request.model_version, rpc="DescribeModel")
        return self.json_msg(await self.call(context, "DescribeModel", "GET", path, {}))

    async def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        # 0 is proto3's "not set": TorchServe's defaults then (100 models from the first).
        query = set_fields(request, ("limit", "next_page_token"))
        return self.json_msg(await self.call(context, "ListModels", "GET", "/models", query))

    async def RegisterModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.url:
            raise ApiError(400, "BadRequestException", "RegisterModel: url is required (a .mar file)")
        fields = tuple(field.name for field in pb.RegisterModelRequest.DESCRIPTOR.fields)
        answer = await self.call(context, "RegisterModel", "POST", "/models", set_fields(request, fields))
        return self.status_msg(answer)

    async def ScaleWorker(self, request: Any, context: Any) -> Any:  # noqa: N802
        path = model_path(request.model_name, request.model_version, rpc="ScaleWorker")
        fields = ("min_worker", "max_worker", "number_gpu", "synchronous", "timeout")
        answer = await self.call(context, "ScaleWorker", "PUT", path, set_fields(request, fields))
        return self.status_msg(answer)

    async def SetDefault(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.model_version:
            raise ApiError(400, "BadRequestException", "SetDefault: model_version is required")
        path = model_path(request.model_name, request.model_version, rpc="SetDefault") + "/set-default"
        return self.status_msg(await self.call(context, "SetDefault", "PUT", path, {}))

    async def UnregisterModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        path = model_path(request.model_name, request.model_version, rpc="UnregisterModel")
        return self.status_msg(await self.call(context, "UnregisterModel", "DELETE", path, {}))

    async def call(self, context: Any, rpc: str, method: str, path: str, query: Query) -> Any:
        """The JSON answer of the REST management route for `method path?query`."""
        check_token(self.state, context, rpc)
        headers = [(b"host", b"127.0.0.1")]  # a gRPC call is no browser request (serve/security.py)
        if self.state.config.token is not None:
            headers.append((b"authorization", f"Bearer {self.state.config.token}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": urlencode(query).encode(),
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }
        status, body = await _run(self.app, scope)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if status >= 400 or answer is None:
            message = answer.get("message") if isinstance(answer, dict) else None
            error = "management failed" if status == 500 else "no such management call on this server"
            kind = str(answer.get("type") if isinstance(answer, dict) else "Error")
            raise ApiError(status if status >= 400 else 500, kind, f"{rpc}: {message or error}")
        return answer

    @staticmethod
    def json_msg(answer: Any) -> Any:
        return pb.ManagementResponse(msg=json.dumps(answer, indent=2))  # TorchServe's pretty JSON

    @staticmethod
    def status_msg(answer: Any) -> Any:
        status = answer.get("status") if isinstance(answer, dict) else None
        return pb.ManagementResponse(msg=str(status) if status is not None else json.dumps(answer, indent=2))


async def _run(app: Starlette, scope: MutableMapping[str, Any]) -> tuple[int, bytes]:
    """Run one request through `app` in-process; (status, body)."""
    status = 500
    chunks: list[bytes] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    try:
        await app(scope, receive, send)
    except Exception:  # noqa: BLE001 - already answered as a 500 by `unexpected_error` (and logged)
        status = 500
    return status, b"".join(chunks)


def model_path(name: str, version: str, *, rpc: str) -> str:
    if not name:
        raise ApiError(400, "BadRequestException", f"{rpc}: model_name is required")
    path = "/models/" + quote(name, safe="")
    return path + ("/" + quote(version, safe="") if version else "")


def set_fields(request: Any, names: tuple[str, ...]) -> Query:
    """The fields of `request` that are set (proto3: not 0, "" or false) as query parameters."""
    query: Query = {}
    for name in names:
        value = getattr(request, name)
        if value:
            query[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


def handler(state: ServerState) -> Any:
    """The generic handler serving TorchServe's `ManagementAPIsService` from `state`."""
    servicer = ManagementServicer(state)
    methods = pb.DESCRIPTOR.services_by_name["ManagementAPIsService"].methods
    table = {
        method.name: rpc_method(
            getattr(servicer, method.name), getattr(pb, method.input_type.name), ts_status
        )
        for method in methods
    }
    return grpc.method_handlers_generic_handler(SERVICE, table)
