"""KServe Open Inference Protocol v2 (REST): health, model metadata, readiness and infer.

A request carries either one tensor of shape `[n, *row_shape]` (any name) or one `[n]`
tensor per named model input (columns, stacked in the model's input order). The answer has
a `predictions` tensor and, when the model gives them, a `scores` tensor `[n, k]`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import inferline
from inferline.models.base import Prediction
from inferline.serve.http import bad_request, invalid_input, json_response, parse_json
from inferline.serve.models import ServedVersion
from inferline.serve.state import server_of
from inferline.serve.values import DATATYPES, may_hold_booleans, typed_tensor


def datatype_of(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{array.dtype.itemsize * 8}"
    if kind == "f":
        return f"FP{array.dtype.itemsize * 8}"
    return "BYTES"


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    state = server_of(request)
    return json_response({"ready": state.ready}, status=200 if state.ready else 503)


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "inferline", "version": inferline.__version__, "extensions": []})


async def model_metadata(request: Request) -> Response:
    state = server_of(request)
    name = request.path_params["name"]
    served = await state.resolve(name, request.path_params.get("version"))
    model = state.models.models[name]
    probe = await served.probe()
    classes = getattr(served.loaded.model, "classes_", None)
    if probe is not None:
        predictions_type = datatype_of(np.asarray(probe.prediction))
    else:
        predictions_type = datatype_of(np.asarray(classes)) if classes is not None else "FP32"
    outputs = [{"name": "predictions", "datatype": predictions_type, "shape": [-1]}]
    if probe is not None and probe.scores is not None:  # only what the model really answers
        outputs.append({"name": "scores", "datatype": datatype_of(probe.scores), "shape": [-1, -1]})
    return json_response(
        {
            "name": name,
            "versions": sorted(model.versions, key=lambda v: (not v.isdigit(), v.zfill(12))),
            "platform": served.framework,
            "inputs": [{"name": "input", "datatype": "FP64", "shape": served.expected_shape()}],
            "outputs": outputs,
            "parameters": {"model_id": served.model_id, "features": served.inputs},
        }
    )


async def model_ready(request: Request) -> Response:
    served = await server_of(request).resolve(request.path_params["name"], request.path_params.get("version"))
    return json_response({"name": served.name, "version": served.version, "ready": True})


async def infer(request: Request) -> Response:
    params = request.path_params
    return await server_of(request).infer(
        request, params["name"], params.get("version"), parse_infer, render_infer
    )


def parse_infer(body: bytes, request: Request, served: ServedVersion) -> tuple[np.ndarray, Any]:
    route = f"POST /v2/models/{served.name}/infer"
    payload = parse_json(body, route=route)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise bad_request(f'{route}: expected {{"inputs": [{{name, shape, datatype, data}}, ...]}}')
    bools = may_hold_booleans(body)
    tensors = [_tensor(spec, served, route, may_hold_bools=bools) for spec in payload["inputs"]]
    if len(tensors) == 1 and (tensors[0][0] not in served.inputs or len(served.inputs) == 1):
        name, array = tensors[0]
        if array.ndim == 1 and served.row_shape is not None and served.row_shape != (1,):
            array = array.reshape(1, -1) if array.shape[0] == math.prod(served.row_shape) else array
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        rows = served.check_rows(array, input_name=name)
    else:
        rows = _columns(tensors, served)
    wanted = payload.get("outputs")
    names = None
    if isinstance(wanted, list):
        names = [o.get("name") for o in wanted if isinstance(o, dict)]
        unknown = [n for n in names if n not in ("predictions", "scores")]
        if unknown:
            raise bad_request(f"{route}: unknown outputs {unknown}; expected predictions, scores")
    return rows, (payload.get("id"), names)


def _tensor(spec: Any, served: ServedVersion, route: str, *, may_hold_bools: bool) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise bad_request(f"{route}: each input must be an object with name, shape, datatype, data")
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in spec]
    if missing:
        raise bad_request(f"{route}: input {spec.get('name', '?')!r} lacks {', '.join(missing)}")
    name, shape, datatype = str(spec["name"]), spec["shape"], spec["datatype"]
    expected = served.expected_shape()
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_request(f"{route}: input {name!r} shape must be a list of sizes, got {shape!r}")
    if datatype not in DATATYPES:
        raise invalid_input(
            f"model {served.model_id}: input {name!r} has datatype {datatype!r}; expected a numeric "
            f"datatype (FP32, FP64, INT64, ...) of shape {expected}"
        )
    data = spec["data"]
    if not isinstance(data, list):
        raise invalid_input(
            f"model {served.model_id}: input {name!r} data must be a list, got {type(data).__name__}"
        )

    def where(index: tuple[int, ...]) -> str:
        position = ", ".join(map(str, index)) or "0"
        return f"model {served.model_id}: input {name!r} value [{position}]"

    try:
        array = typed_tensor(data, datatype, where=where, may_hold_bools=may_hold_bools)
    except ValueError as exc:  # ragged nested lists
        raise invalid_input(
            f"model {served.model_id}: input {name!r} data is not a regular {datatype} array ({exc})"
        ) from exc
    if array.size != math.prod(shape):
        raise invalid_input(
            f"model {served.model_id}: input {name!r} has {array.size} values but shape {shape} "
            f"needs {math.prod(shape)}; expected shape {expected}"
        )
    return name, array.reshape(shape)


def _columns(tensors: list[tuple[str, np.ndarray]], served: ServedVersion) -> np.ndarray:
    names = [name for name, _ in tensors]
    one_tensor = f"one tensor of shape {served.expected_shape()}"
    expected = (
        f"{', '.join(served.inputs)} (one [n] tensor each), or {one_tensor}" if served.inputs else one_tensor
    )
    unknown = list(dict.fromkeys(n for n in names if n not in served.inputs))
    if unknown:
        raise bad_request(
            f"model {served.model_id}: unknown inputs {', '.join(map(repr, unknown))}; expected {expected}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = [n for n in served.inputs if n not in names]
    if repeated or missing:
        problem = (
            f"repeated inputs {', '.join(repeated)}" if repeated else f"missing inputs {', '.join(missing)}"
        )
        raise bad_request(f"model {served.model_id}: {problem}; expected {expected}")
    by_name = dict(tensors)
    if any(by_name[n].ndim == 0 for n in served.inputs):
        raise invalid_input(
            f"model {served.model_id}: per-feature inputs must all have shape [n] with the same n"
        )
    columns = [by_name[n].reshape(len(by_name[n]), -1) for n in served.inputs]
    lengths = {len(c) for c in columns}
    if len(lengths) != 1 or any(c.shape[1] != 1 for c in columns):
        raise invalid_input(
            f"model {served.model_id}: per-feature inputs must all have shape [n] with the same n"
        )
    return served.check_rows(np.hstack(columns).astype(np.float64), input_name="inputs")


def render_infer(served: ServedVersion, prediction: Prediction, context: Any) -> dict[str, Any]:
    request_id, names = context
    outputs = []
    for name, array in (("predictions", prediction.prediction), ("scores", prediction.scores)):
        if array is None or (names is not None and name not in names):
            continue
        outputs.append(
            {
                "name": name,
                "datatype": datatype_of(array),
                "shape": list(array.shape),
                "data": array.reshape(-1).tolist(),
            }
        )
    out: dict[str, Any] = {"model_name": served.name, "model_version": served.version, "outputs": outputs}
    if request_id is not None:
        out["id"] = request_id
    return out


def routes() -> list[Route]:
    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]
