"""Vertex AI's custom-container contract: its health and predict routes, from its variables.

Vertex AI (and AI Platform Prediction) starts the container with `AIP_HTTP_PORT` (where to
listen), `AIP_HEALTH_ROUTE` (GET, 200 once models are loaded), `AIP_PREDICT_ROUTE` (POST
`{"instances": [...], "parameters": {...}}`, answered `{"predictions": [...]}`, one per
instance) and `AIP_STORAGE_URI` (the model artifacts: an inferline store or `.mar` files);
`inferline serve` reads the port and store (`commands/serve.py`), this module the routes.

The predict route serves the container's one model (the first by name when there are
several). An instance of a `.mar` model is one handler item (`{"data": instance}`, with
Vertex's `{"b64": "..."}` decoded to bytes); other models take instances as rows.

Example:
    >>> os.environ["AIP_PREDICT_ROUTE"] = "/predict"  # doctest: +SKIP
    >>> [route.path for route in routes()]  # doctest: +SKIP
    ['/predict']
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.models.base import Prediction
from inferline.models.mar import FRAMEWORK as MAR
from inferline.models.ts_context import TorchServeRequest
from inferline.serve.bodies import instances_of
from inferline.serve.http import bad_request, json_response, not_found, parse_json
from inferline.serve.models import ServedVersion
from inferline.serve.state import server_of
from inferline.serve.torchserve import handler_headers, parse_predictions

HEALTH = "AIP_HEALTH_ROUTE"
PREDICT = "AIP_PREDICT_ROUTE"


async def health(request: Request) -> Response:
    state = server_of(request)
    if not state.ready or not state.models.names():
        return json_response({"status": "Unhealthy"}, status=503)
    return json_response({"status": "Healthy"})


async def predict(request: Request) -> Response:
    state = server_of(request)
    names = state.models.names()
    if not names:
        raise not_found(f"POST {request.url.path}: no model is served yet")
    return await state.infer(request, names[0], None, parse_vertex, render_vertex)


def parse_vertex(body: bytes, request: Request, served: ServedVersion) -> tuple[np.ndarray, Any]:
    route = f"POST {request.url.path}"
    payload = parse_json(body, route=route)
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise bad_request(
            f'{route}: expected {{"instances": [...], "parameters": {{...}}}} (Vertex AI\'s body)'
        )
    if served.framework != MAR:
        return parse_predictions(body, request, served)
    instances = instances_of(payload, route)
    rows = np.empty(len(instances), dtype=object)
    for i, instance in enumerate(instances):
        item = {"data": _decoded(instance, route), "parameters": payload.get("parameters") or {}}
        rows[i] = TorchServeRequest(item, handler_headers(request))
    return rows, None


def _decoded(instance: Any, route: str) -> Any:
    if isinstance(instance, dict) and set(instance) == {"b64"}:
        try:
            return base64.b64decode(str(instance["b64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"{route}: an instance's b64 is not base64 ({exc})") from None
    return instance


def render_vertex(served: ServedVersion, prediction: Prediction, context: Any) -> dict[str, Any]:
    if prediction.outputs is not None:
        return {"predictions": prediction.instances()}
    return {"predictions": list(prediction.prediction) if served.framework == MAR else prediction.prediction}


def routes() -> list[Route]:
    out = []
    if os.environ.get(HEALTH):
        out.append(Route(os.environ[HEALTH], health, methods=["GET"]))
    if os.environ.get(PREDICT):
        out.append(Route(os.environ[PREDICT], predict, methods=["POST"]))
    return out
