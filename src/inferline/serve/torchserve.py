"""TorchServe's inference API: `GET /ping`, `POST /predictions/{name}[/{version}]`.

A body is one instance (`[5.1, 3.5, 1.4, 0.2]` or `{"sepal_length": 5.1, ...}`), a list of
instances, or `{"instances": [...]}`; an `image/*` body is one image, decoded with the
model's saved image settings. The answer is `{"predictions": [...], "model_id": "iris/2"}`
plus `"scores"` when the model gives probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.errors import InferlineError
from inferline.models.base import Prediction
from inferline.models.hooks import HookError
from inferline.serve.http import ApiError, bad_request, invalid_input, json_response, parse_json
from inferline.serve.models import ServedVersion
from inferline.serve.state import server_of


async def ping(request: Request) -> Response:
    state = server_of(request)
    if not state.ready:
        return json_response({"status": "Unhealthy"}, status=503)
    return json_response({"status": "Healthy"})


async def predictions(request: Request) -> Response:
    params = request.path_params
    return await server_of(request).infer(
        request, params["name"], params.get("version"), parse_predictions, render_predictions
    )


def parse_predictions(body: bytes, request: Request, served: ServedVersion) -> tuple[np.ndarray, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("image/"):
        return decode_image_body(body, served), None
    route = f"POST /predictions/{served.name}"
    instances = instances_of(parse_json(body, route=route), route)
    if served.hooks is not None:
        batch = instances_batch(instances, served)
        try:
            inputs = served.hooks.preprocess(batch)
        except HookError as exc:
            raise ApiError(500, "HookError", str(exc)) from exc
        if inputs is not None:
            return served.check_rows(np.asarray(inputs), input_name="instances"), batch
        return rows_of(instances, served, input_name="instances"), batch
    return rows_of(instances, served, input_name="instances"), None


def instances_batch(instances: list[Any], served: ServedVersion) -> pa.RecordBatch:
    """The request's instances as an Arrow batch, as hooks see rows in a pipeline."""
    if not instances:
        raise invalid_input(f"model {served.model_id}: input 'instances' is empty; send at least one row")
    try:
        if all(isinstance(row, dict) for row in instances):
            return pa.RecordBatch.from_pylist(instances)
        return pa.RecordBatch.from_pydict({"input": instances})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise bad_request(f"model {served.model_id}: instances do not share one shape ({exc})") from exc


def instances_of(payload: Any, route: str) -> list[Any]:
    """The list of instances in any of TorchServe/KServe-v1's body shapes."""
    if isinstance(payload, dict):
        if "instances" in payload:
            instances = payload["instances"]
            if not isinstance(instances, list):
                raise bad_request(f"{route}: 'instances' must be a list, got {type(instances).__name__}")
            return instances
        return [payload]
    if isinstance(payload, list):
        if payload and not isinstance(payload[0], (list, dict)):
            return [payload]
        return payload
    raise bad_request(
        f'{route}: expected a JSON list, an object or {{"instances": [...]}}, got {type(payload).__name__}'
    )


def rows_of(instances: list[Any], served: ServedVersion, *, input_name: str) -> np.ndarray:
    if not instances:
        raise invalid_input(f"model {served.model_id}: input {input_name!r} is empty; send at least one row")
    if isinstance(instances[0], dict):
        instances = [_named_row(row, served, i) for i, row in enumerate(instances)]
    try:
        rows = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise invalid_input(
            f"model {served.model_id}: input {input_name!r} must be numbers of shape "
            f"{served.expected_shape()} ({exc})"
        ) from exc
    if rows.ndim == 1:
        rows = rows.reshape(len(rows), 1) if served.row_shape == (1,) else rows.reshape(1, -1)
    return served.check_rows(rows, input_name=input_name)


def _named_row(row: Any, served: ServedVersion, index: int) -> list[Any]:
    if not isinstance(row, dict):
        raise bad_request(f"model {served.model_id}: instance {index} is not an object like the others")
    if not served.inputs:
        raise invalid_input(
            f"model {served.model_id}: instance {index} has named fields but the model has no input "
            f"names; send lists of shape {served.expected_shape()}"
        )
    missing = [name for name in served.inputs if name not in row]
    if missing:
        raise invalid_input(
            f"model {served.model_id}: instance {index} lacks {', '.join(missing)}; "
            f"expected fields {', '.join(served.inputs)}"
        )
    return [row[name] for name in served.inputs]


IMAGE_KEYS = ("resize", "mode", "scale", "mean", "std", "layout")


def decode_image_body(body: bytes, served: ServedVersion) -> np.ndarray:
    """One image body as a one-row batch, decoded with the model's saved image settings."""
    try:
        from inferline.io.images import decode_image
    except ImportError as exc:  # the images module or Pillow is missing
        raise ApiError(
            415, "UnsupportedMediaType", f"model {served.model_id}: image bodies need Pillow ({exc})"
        ) from exc
    settings = image_settings(served)
    if not body:
        raise bad_request(f"model {served.model_id}: empty image body")
    try:
        image = np.asarray(decode_image(body, settings))
    except InferlineError as exc:
        raise bad_request(f"model {served.model_id}: {exc}") from exc
    return served.check_rows(image[np.newaxis, ...], input_name="image")


def image_settings(served: ServedVersion) -> Any:
    """`ImageSettings` from the store metadata (`image: {...}` or top-level keys)."""
    from inferline.io.images import ImageSettings

    meta = served.metadata.get("image", served.metadata)
    if not isinstance(meta, dict):
        meta = {}
    values: dict[str, Any] = {key: meta[key] for key in IMAGE_KEYS if meta.get(key) is not None}
    if "resize" in values:
        resize = [int(v) for v in values["resize"]]
        values["resize"] = tuple(resize * 2 if len(resize) == 1 else resize)
    for key in ("mean", "std"):
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    if "layout" in values:
        values["layout"] = str(values["layout"]).upper()
    try:
        return ImageSettings(**values)
    except (InferlineError, TypeError) as exc:
        raise ApiError(
            500, "ModelConfigError", f"model {served.model_id}: bad image settings in its metadata ({exc})"
        ) from exc


def render_predictions(served: ServedVersion, prediction: Prediction, context: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model_id": served.model_id, "predictions": prediction.prediction.tolist()}
    if prediction.scores is not None:
        out["scores"] = prediction.scores.tolist()
    if served.hooks is not None and served.hooks.active:
        batch = (
            context
            if isinstance(context, pa.RecordBatch)
            else pa.RecordBatch.from_pydict(
                {"input": [None] * len(prediction.prediction)}, schema=pa.schema([("input", pa.null())])
            )
        )
        try:
            columns = served.hooks.postprocess(batch, prediction)
        except HookError as exc:
            raise ApiError(500, "HookError", str(exc)) from exc
        out.update({name: column.to_pylist() for name, column in columns.items()})
    return out


def routes() -> list[Route]:
    return [
        Route("/ping", ping, methods=["GET"]),
        Route("/predictions/{name}", predictions, methods=["POST"]),
        Route("/predictions/{name}/{version}", predictions, methods=["POST"]),
    ]
