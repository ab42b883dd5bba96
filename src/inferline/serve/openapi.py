"""`OPTIONS /`: the server's routes as an OpenAPI description, as TorchServe answers it.

Built from the app's own route table, so it lists exactly what this server answers (Vertex AI's
routes too when their variables are set).

Example:
    >>> httpx.request("OPTIONS", "http://localhost:8080/").json()["paths"]["/ping"]  # doctest: +SKIP
    {'get': {'operationId': 'get/ping', 'summary': 'GET /ping'}}
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.serve.http import json_response


def _version() -> str:
    try:
        return version("inferline")
    except PackageNotFoundError:
        return "0"


async def describe_api(request: Request) -> Response:
    paths: dict[str, dict[str, Any]] = {}
    for route in request.app.routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = {
                "operationId": f"{method.lower()}{route.path}",  # unique per route and method
                "summary": f"{method} {route.path}",
            }
    return json_response(
        {"openapi": "3.0.1", "info": {"title": "inferline serve", "version": _version()}, "paths": paths}
    )


def routes() -> list[Route]:
    return [Route("/", describe_api, methods=["OPTIONS"])]
