"""TorchServe-shaped management API over the model store, guarded by a bearer token.

    GET    /models[?limit=&next_page_token=]        every served model (TorchServe's pages)
    GET    /models/{name}[/{version}|/all]          its versions (store + what is loaded), with
                                                    TorchServe's describe keys
    POST   /models?url=...&model_name=...&batch_size=...&max_batch_delay=...
                                                    (a .mar names itself; its version string
                                                    registered twice is a 409)
    PUT    /models/{name}/{version}/set-default     pins the version in the store
    DELETE /models/{name}[/{version}]               stops serving it (files stay in the store);
                                                    404 for no such version, 403 for the default

With a token configured every route here needs `Authorization: Bearer TOKEN`. Every route
refuses what a web page could send behind the user's back (see `inferline.serve.security`).
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.errors import InferlineError
from inferline.serve.catalog import StoreCatalog
from inferline.serve.http import ApiError, bad_request, json_response, not_found
from inferline.serve.models import BatchSettings, ServedVersion
from inferline.serve.security import check_browser_request
from inferline.serve.state import ServerState, server_of

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """`endpoint` refusing cross-site browser requests, behind the server's token (if any)."""

    async def check(request: Request) -> Response:
        config = server_of(request).config
        check_browser_request(request, allow_origins=config.allow_origins, loopback_only=config.loopback_only)
        token = config.token
        if token is not None:
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                raise ApiError(
                    401,
                    "Unauthorized",
                    f"{request.method} {request.url.path}: management needs 'Authorization: Bearer TOKEN'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                raise ApiError(403, "Forbidden", f"{request.method} {request.url.path}: wrong token")
        return await endpoint(request)

    return check


def _catalog(state: ServerState) -> StoreCatalog:
    if state.catalog is None:
        raise bad_request("this server has no model store; start it with --models STORE")
    return state.catalog


async def list_models(request: Request) -> Response:
    state = server_of(request)
    names = state.models.names()
    limit_text = request.query_params.get("limit") or "100"
    if not limit_text.isdigit() or not 0 < int(limit_text) <= 1000:
        raise bad_request(f"GET /models: limit={limit_text!r}; expected a whole number from 1 to 1000")
    limit = int(limit_text)
    token = request.query_params.get("next_page_token") or "0"
    if not token.isdigit():
        raise bad_request(
            f"GET /models: next_page_token={token!r}; pass back the nextPageToken of the last page"
        )
    start = int(token)
    page = names[start : start + limit]
    models = [{"modelName": name, "modelUrl": state.models.models[name].url} for name in page]
    out: dict[str, Any] = {"models": models}
    if start + limit < len(names):
        out["nextPageToken"] = str(start + limit)  # TorchServe's pagination: an offset
    return json_response(out)


async def describe_model(request: Request) -> Response:
    state = server_of(request)
    name = request.path_params["name"]
    wanted = request.path_params.get("version")
    if wanted == "all":  # TorchServe's GET /models/{name}/all
        wanted = None
    model = state.models.models.get(name)
    if model is None:
        raise not_found(f"model {name!r} is not served; have {', '.join(state.models.names()) or 'none'}")
    records: dict[str, dict[str, Any]] = {}
    if state.catalog is not None:
        catalog = state.catalog
        try:
            stored = await asyncio.to_thread(catalog.store.versions, name)
        except InferlineError:
            stored = []
        for found in stored:
            version = str(found.version)
            if (name, version) in catalog.hidden_versions:
                continue
            records[version] = {
                "modelUrl": found.uri,
                "framework": found.framework,
                "inputs": found.inputs,
                "created": found.created,
            }
    for version, served in model.versions.items():
        records.setdefault(
            version, {"modelUrl": served.loaded.uri, "framework": served.framework, "inputs": served.inputs}
        )
    strings = {
        version: str(served.metadata["model_version"])
        for version, served in model.versions.items()
        if served.metadata.get("model_version")
    }
    if wanted is not None and wanted not in records:
        wanted = next((version for version, text in strings.items() if text == wanted), wanted)
    if wanted is not None and wanted not in records:
        raise ApiError(404, "ModelVersionNotFoundException", f"model {name!r} has no version {wanted!r}")
    out = []
    for version, record in records.items():
        if wanted is not None and version != wanted:
            continue
        loaded = model.versions.get(version)
        out.append(
            {
                "modelName": name,
                "modelVersion": strings.get(version, version),
                "storeVersion": version,
                **record,
                "isDefault": version == model.default,
                "loaded": loaded is not None,
                **_batching(loaded.batcher if loaded is not None else model.settings),
                **torchserve_keys(loaded, record),
            }
        )
    return json_response(out)


def torchserve_keys(served: ServedVersion | None, record: dict[str, Any]) -> dict[str, Any]:
    """The rest of TorchServe's describe answer: one in-process worker per loaded version."""
    depth = served.batcher.depth if served is not None else 0
    capacity = served.batcher.max_queue if served is not None else 0
    workers = []
    if served is not None:
        workers.append(
            {
                "id": served.model_id,
                "startTime": record.get("created", ""),
                "status": "READY",
                "memoryUsage": 0,
                "pid": os.getpid(),
                "gpu": False,
                "gpuUsage": "N/A",
            }
        )
    return {
        "runtime": "python",
        "minWorkers": len(workers),
        "maxWorkers": len(workers),
        "loadedAtStartup": served is not None,
        "workers": workers,
        "jobQueueStatus": {"remainingCapacity": max(0, capacity - depth), "pendingRequests": depth},
    }


async def register_model(request: Request) -> Response:
    state = server_of(request)
    query = request.query_params
    url = query.get("url")
    if not url:
        raise bad_request("POST /models: missing ?url=PATH of the model file to register")
    name = query.get("model_name") or await _archive_name(url)
    if not name:
        raise bad_request("POST /models: missing ?model_name=NAME")
    base = state.models.settings_for(name)
    settings = BatchSettings(
        batch_size=_int(query.get("batch_size"), "batch_size", base.batch_size),
        max_batch_delay_ms=_int(
            query.get("max_batch_delay"), "max_batch_delay", int(base.max_batch_delay_ms)
        ),
        max_queue=base.max_queue,
    )
    served = await _catalog(state).register(url, name, settings, framework=query.get("framework"))
    return json_response(
        {
            "status": f'Model "{name}" Version: {served.version} registered with batch_size '
            f"{settings.batch_size}",
            "modelName": name,
            "modelVersion": served.version,
        }
    )


async def _archive_name(url: str) -> str | None:
    """A `.mar`'s own model name (TorchServe registers archives without model_name)."""
    if not url.lower().endswith(".mar"):
        return None
    from inferline.models.mar import archive_metadata

    try:
        meta = await asyncio.to_thread(archive_metadata, url)
    except InferlineError as exc:
        raise bad_request(f"POST /models: {exc}") from exc
    return meta.get("model_name")


async def set_default(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params["version"]
    await _catalog(server_of(request)).set_default(name, version)
    return json_response({"status": f'Default version of model "{name}" is now "{version}"'})


async def unregister(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params.get("version")
    await _catalog(server_of(request)).unregister(name, version)
    what = f'Model "{name}"' + (f' version "{version}"' if version else "")
    return json_response({"status": f"{what} unregistered"})


def _batching(source: Any) -> dict[str, Any]:
    # A loaded version reports its batcher's settings, others what they would get.
    return {
        "batchSize": source.batch_size,
        "maxBatchDelay": source.max_batch_delay_ms,
        "maxQueue": source.max_queue,
    }


def _int(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1 and name == "batch_size":
        raise bad_request(f"POST /models: {name}={value!r}; expected a positive whole number")
    return int(value)


def routes() -> list[Route]:
    return [
        Route("/models", guarded(list_models), methods=["GET"]),
        Route("/models", guarded(register_model), methods=["POST"]),
        Route("/models/{name}", guarded(describe_model), methods=["GET"]),
        Route("/models/{name}", guarded(unregister), methods=["DELETE"]),
        Route("/models/{name}/{version}", guarded(describe_model), methods=["GET"]),
        Route("/models/{name}/{version}", guarded(unregister), methods=["DELETE"]),
        Route("/models/{name}/{version}/set-default", guarded(set_default), methods=["PUT"]),
    ]
