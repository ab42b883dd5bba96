"""KServe / Triton Open Inference Protocol v2 over REST: a thin front door to `serve.inference`.

Routes: health, server and model metadata, model config (Triton's `get_model_config`),
readiness, infer, and the model repository extension (index, load, unload; guarded like
management). Infer bodies are JSON, or JSON plus raw tensors (the binary tensor data
extension): the `Inference-Header-Content-Length` header says where the JSON ends, and each
input with `parameters.binary_data_size` takes that many bytes, in order, from the rest.
Outputs come back raw the same way when asked (`parameters.binary_data` per output, or
`binary_data_output` for all). Errors are `{"error": "<message>"}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import inferline
from inferline.models.base import Prediction
from inferline.serve import inference
from inferline.serve.catalog import StoreCatalog
from inferline.serve.http import ApiError, bad_request, json_response
from inferline.serve.inference import InferRequest
from inferline.serve.management import guarded
from inferline.serve.models import ServedVersion
from inferline.serve.state import ServerState, server_of
from inferline.serve.tensors import Tensor, check_header, decode_json, decode_raw, encode_raw, json_data
from inferline.serve.values import may_hold_booleans

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY = "application/octet-stream"
EXTENSIONS = ["binary_tensor_data", "model_repository"]


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    state = server_of(request)
    return json_response({"ready": state.ready}, status=200 if state.ready else 503)


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "inferline", "version": inferline.__version__, "extensions": EXTENSIONS})


async def _served(request: Request) -> ServedVersion:
    return await server_of(request).resolve(request.path_params["name"], request.path_params.get("version"))


async def model_metadata(request: Request) -> Response:
    served = await _served(request)
    model = server_of(request).models.models[served.name]
    return json_response(await inference.model_metadata(model, served))


async def model_config(request: Request) -> Response:
    return json_response(await inference.model_config(await _served(request)))


async def model_ready(request: Request) -> Response:
    served = await _served(request)
    return json_response({"name": served.name, "version": served.version, "ready": True})


async def infer(request: Request) -> Response:
    params = request.path_params
    return await server_of(request).infer(
        request, params["name"], params.get("version"), parse_infer, render_infer
    )


@dataclass
class Wanted:
    """What the answer should hold: the request, and which outputs go back raw."""

    request: InferRequest
    binary: set[str]
    binary_all: bool


def parse_infer(body: bytes, request: Request, served: ServedVersion) -> tuple[np.ndarray, Wanted]:
    route = f"POST /v2/models/{served.name}/infer"
    header, raw = split_body(body, request.headers.get(HEADER_LENGTH), route)
    payload = server_of(request).offload.parse_json(header, route=route)  # big ones: worker process
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise bad_request(f'{route}: expected {{"inputs": [{{name, shape, datatype, data}}, ...]}}')
    tensors = []
    offset = 0
    bools = may_hold_booleans(header)
    for spec in payload["inputs"]:
        tensor, used = _tensor(spec, raw, offset, route, served=served, may_hold_bools=bools)
        tensors.append(tensor)
        offset += used
    if offset != len(raw):
        raise bad_request(
            f"{route}: {len(raw) - offset} bytes of binary data are left after the last input; "
            "each input's parameters.binary_data_size must count its bytes"
        )
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request(f"{route}: parameters must be an object, got {type(parameters).__name__}")
    wanted, binary = _outputs(payload.get("outputs"), route)
    request_id = payload.get("id")
    infer_request = InferRequest(
        tensors, wanted, str(request_id) if request_id is not None else None, parameters
    )
    inference.check_outputs(served, wanted, where=route)
    rows = inference.prepare(served, infer_request, where=route)
    return rows, Wanted(infer_request, binary, parameters.get("binary_data_output") is True)


def split_body(body: bytes, header_length: str | None, route: str) -> tuple[bytes, memoryview]:
    """The JSON part and the raw tensor bytes of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise bad_request(
            f"{route}: {HEADER_LENGTH} {header_length!r} must be the byte length of the JSON part "
            f"(at most the body's {len(body)} bytes)"
        )
    size = int(header_length)
    view = memoryview(body)
    return bytes(view[:size]), view[size:]


def _tensor(
    spec: Any, raw: memoryview, offset: int, route: str, *, served: ServedVersion, may_hold_bools: bool
) -> tuple[Tensor, int]:
    if not isinstance(spec, dict):
        raise bad_request(f"{route}: each input must be an object with name, shape, datatype, data")
    parameters = spec.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    needed = ("name", "shape", "datatype") if size is not None else ("name", "shape", "datatype", "data")
    missing = [key for key in needed if key not in spec]
    if missing:
        raise bad_request(f"{route}: input {spec.get('name', '?')!r} lacks {', '.join(missing)}")
    name = str(spec["name"])
    datatype, shape = check_header(name, spec["datatype"], spec["shape"], where=route)
    if size is None:
        data = decode_json(
            name, datatype, shape, spec["data"], model=served.model_id, may_hold_bools=may_hold_bools
        )
        return Tensor(name, datatype, data), 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(raw):
        raise bad_request(
            f"{route}: input {name!r} has binary_data_size {size!r} but only {len(raw) - offset} "
            f"bytes of binary data are left (is {HEADER_LENGTH} right?)"
        )
    try:
        array = decode_raw(raw[offset : offset + size], datatype, shape, name=name)
    except ApiError as exc:
        raise bad_request(f"{route}: {exc.message}") from exc
    return Tensor(name, datatype, array), size


def _outputs(outputs: Any, route: str) -> tuple[list[str] | None, set[str]]:
    if outputs is None:
        return None, set()
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
        raise bad_request(f"{route}: outputs must be a list of {{name, parameters}} objects")
    names = [str(o["name"]) for o in outputs]
    binary = {
        str(o["name"])
        for o in outputs
        if isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data") is True
    }
    return names, binary


def render_infer(served: ServedVersion, prediction: Prediction, wanted: Wanted) -> dict[str, Any] | Response:
    tensors = inference.outputs_for(served, prediction, wanted.request)
    outputs: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for tensor in tensors:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if wanted.binary_all or tensor.name in wanted.binary:
            data = encode_raw(tensor.array)
            entry["parameters"] = {"binary_data_size": len(data)}
            buffers.append(data)
        else:
            entry["data"] = json_data(tensor.array)
        outputs.append(entry)
    out: dict[str, Any] = {"model_name": served.name, "model_version": served.version, "outputs": outputs}
    if wanted.request.id is not None:
        out["id"] = wanted.request.id
    if not buffers:
        return out
    header = json.dumps(out, separators=(",", ":"), allow_nan=False).encode()
    return Response(
        b"".join([header, *buffers]), media_type=BINARY, headers={HEADER_LENGTH: str(len(header))}
    )


# --- the model repository extension ------------------------------------------------------
async def repository_index(request: Request) -> Response:
    return json_response(await inference.repository_models(server_of(request)))


async def repository_load(request: Request) -> Response:
    await _catalog(server_of(request)).load_model(request.path_params["name"])
    return json_response({})


async def repository_unload(request: Request) -> Response:
    await _catalog(server_of(request)).unregister(request.path_params["name"], None)
    return json_response({})


def _catalog(state: ServerState) -> StoreCatalog:
    if state.catalog is None:
        raise bad_request("this server has no model store; start it with --models STORE")
    return state.catalog


def routes() -> list[Route]:
    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/config", model_config, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/config", model_config, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", guarded(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{name}/load", guarded(repository_load), methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", guarded(repository_unload), methods=["POST"]),
    ]
