"""TorchServe's inference API: `GET /ping`, `POST|PUT /predictions/{name}[/{version}]`.

A body is one instance (`[5.1, 3.5, 1.4, 0.2]` or `{"sepal_length": 5.1, ...}`), a list of
instances, or `{"instances": [...]}`; for a text model (a Hugging Face folder) an instance is a
JSON string or `{"text": "..."}`, and a `text/plain` body is one; an `image/*` body, raw bytes (`curl -T`,
`application/octet-stream`, no Content-Type) or each `data`/`body` file of a multipart form
is one image, decoded with the model's saved image settings. A `.mar` model gets TorchServe's
request items instead (`serve/ts_bodies.py`) and answers what its handler returns.
Other models answer `{"predictions": [...], "model_id": "iris/2"}`
plus `"scores"` when the model gives probabilities; a model with several outputs answers one
object per instance with a field per output (`[{"total": 6.0, "doubled": [2.0, 4.0, 6.0]}]`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.models.base import Prediction
from inferline.models.hooks import HookError
from inferline.models.mar import FRAMEWORK as MAR
from inferline.models.ts_context import TorchServeRequest
from inferline.serve.bodies import instances_of, parse_instances, rows_of
from inferline.serve.http import ApiError, bad_request, invalid_input, json_response, parse_json
from inferline.serve.images import decode_image_body, has_image_settings
from inferline.serve.models import ServedVersion
from inferline.serve.offload import PROCESS_BODY_BYTES, Offload
from inferline.serve.state import server_of
from inferline.serve.ts_bodies import INSTANCE_FIELDS, form_parts, is_multipart, request_items
from inferline.serve.values import may_hold_booleans


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
    route = f"{request.method} /predictions/{served.name}"
    offload = server_of(request).offload
    return parse_body(
        body, content_type, served, route=route, offload=offload, headers=handler_headers(request)
    )


def parse_body(
    body: bytes,
    content_type: str,
    served: ServedVersion,
    *,
    route: str,
    offload: Offload,
    headers: dict[str, str] | None = None,
) -> tuple[np.ndarray, Any]:
    """One request body as rows for `served` (and the hooks' batch); REST and TorchServe's gRPC.

    A `.mar` handler sees `headers` through its context (`get_request_header`)."""
    if served.framework == MAR:  # TorchServe's handler reads TorchServe's request items
        return mar_rows(request_items(body, content_type, where=route), headers), None
    if is_multipart(content_type):
        images = [
            decode_image_body(value, served)
            for name, value, _ in form_parts(body, content_type, where=route)
            if name in INSTANCE_FIELDS
        ]
        if not images:
            raise bad_request(f"{route}: no data or body field in the form; send -F data=@FILE")
        return np.concatenate(images), None
    if served.spec.text_only and content_type.split(";", 1)[0].strip().lower() == "text/plain":
        return text_body(body, served, route), None
    if content_type.startswith("image/") or is_raw(content_type, body, served):
        return decode_image_body(body, served), None
    if served.hooks is None and len(body) >= PROCESS_BODY_BYTES:
        # Called on a worker thread (see ServerState._parse): wait for the worker process.
        return offload.in_process(parse_instances, body, route, served.spec), None
    instances = instances_of(parse_json(body, route=route), route, text_only=served.spec.text_only)
    bools = may_hold_booleans(body)
    if served.hooks is not None:
        batch = instances_batch(instances, served)
        try:
            inputs = served.hooks.preprocess(batch)
        except HookError as exc:
            raise ApiError(500, "HookError", str(exc)) from exc
        if inputs is not None:
            return served.check_rows(np.asarray(inputs), input_name="instances"), batch
        return rows_of(instances, served.spec, input_name="instances", may_hold_bools=bools), batch
    return rows_of(instances, served.spec, input_name="instances", may_hold_bools=bools), None


def mar_rows(items: list[dict[str, Any]], headers: dict[str, str] | None) -> np.ndarray:
    """A `.mar` model's rows: one TorchServe request (item and headers) per item."""
    rows = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        rows[i] = TorchServeRequest(item, headers or {})
    return rows


def handler_headers(request: Request) -> dict[str, str]:
    """The request's headers as a TorchServe handler reads them (`context.get_request_header`);
    the management token is not the handler's business."""
    return {name: value for name, value in request.headers.items() if name != "authorization"}


def text_body(body: bytes, served: ServedVersion, route: str) -> np.ndarray:
    """A `text/plain` body: one instance for a text model (TorchServe's `curl -T text.txt`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"{route}: a text/plain body must be UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    return served.check_rows(np.array([[text]], dtype=object), input_name="text")


def is_raw(content_type: str, body: bytes, served: ServedVersion) -> bool:
    """Raw image bytes: `application/octet-stream`, or no Content-Type and not JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/octet-stream":
        if not has_image_settings(served):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"model {served.model_id} takes no raw bytes (it has no image settings); send JSON",
            )
        return True
    if media or not has_image_settings(served):
        return False
    head = body.lstrip()[:1]
    return not head or head not in b'[{"-0123456789tfn'


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


def render_predictions(served: ServedVersion, prediction: Prediction, context: Any) -> Any:
    if served.framework == MAR:
        return handler_answer(list(prediction.prediction))
    # Arrays, not lists: the answer is encoded in slices (`inferline.serve.answers`).
    # A model with several outputs answers an object per instance, a field per output.
    # A classifier with other outputs answers its labels and scores, then a field per other output.
    others = prediction.others()
    several = prediction.outputs is not None and others is None
    predictions = prediction.instances() if several else prediction.prediction
    out: dict[str, Any] = {"model_id": served.model_id, "predictions": predictions}
    if prediction.scores is not None:
        out["scores"] = prediction.scores
    for name, values in (others or {}).items():
        out.setdefault(name, values)
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


def handler_answer(answers: list[Any]) -> Any:
    """A TorchServe handler's answer to one request: JSON, or its text or bytes as they are."""
    answer = answers[0] if len(answers) == 1 else answers
    if isinstance(answer, bytes | bytearray):
        return Response(bytes(answer), media_type="application/octet-stream")
    if isinstance(answer, str):
        return Response(answer, media_type="text/plain")
    return answer


def routes() -> list[Route]:
    return [
        Route("/ping", ping, methods=["GET"]),
        Route("/predictions/{name}", predictions, methods=["POST", "PUT"]),
        Route("/predictions/{name}/{version}", predictions, methods=["POST", "PUT"]),
    ]
