"""TorchServe-shaped management API over the model store, guarded by a bearer token.

    GET    /models[?limit=&next_page_token=]        every served model (TorchServe's pages)
    GET    /models/{name}[/{version}|/all]          its default version, one version, or all of
                                                    them (store + what is loaded), with
                                                    TorchServe's describe keys
    POST   /models?url=...&model_name=...&batch_size=...&max_batch_delay=...&initial_workers=...
           [&resize=28,28&mode=L&scale=255&mean=...&std=...&layout=NCHW]
                                                    (a .mar names itself; its version string
                                                    registered twice is a 409; the first version
                                                    is the default, later ones after set-default);
                                                    inferline's &framework=, &signature=
                                                    (SavedModel), &task= (Hugging Face), &output=
                                                    are kept in the version's metadata
    PUT    /models/{name}[/{version}]?min_worker=&max_worker=&synchronous=
                                                    model calls running at once (TorchServe's
                                                    scale workers; 202 unless synchronous=true)
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
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferline.errors import InferlineError
from inferline.serve.catalog import StoreCatalog
from inferline.serve.http import ApiError, bad_request, json_response, not_found
from inferline.serve.models import ServedVersion
from inferline.serve.security import check_browser_request
from inferline.serve.state import ServerState, server_of

Endpoint = Callable[[Request], Awaitable[Response]]
# POST /models parameters stored as the version's handler options (models.store.HANDLER_OPTIONS).
REGISTER_OPTIONS = ("signature", "task", "output", "outputs")


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

    check.management = True  # type: ignore[attr-defined]  # served on the management port (serve/ports.py)
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
    model = state.models.models.get(name)
    if model is None:
        raise not_found(f"model {name!r} is not served; have {', '.join(state.models.names()) or 'none'}")
    if wanted is None:  # as TorchServe: the default version; /all lists every version
        wanted = model.default
    elif wanted == "all":
        wanted = None
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
        workers = [
            {
                "id": f"{served.model_id}#{i}",
                "startTime": record.get("created", ""),
                "status": "READY",
                "memoryUsage": 0,
                "pid": os.getpid(),  # workers are threads of the server process
                "gpu": False,
                "gpuUsage": "N/A",
            }
            for i in range(served.batcher.workers)
        ]
    return {
        "runtime": "python",
        "minWorkers": len(workers),
        "maxWorkers": served.max_workers if served is not None else 0,
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
    settings = replace(
        base,
        batch_size=_int(query.get("batch_size"), "batch_size", base.batch_size),
        max_batch_delay_ms=_int(
            query.get("max_batch_delay"), "max_batch_delay", int(base.max_batch_delay_ms)
        ),
    )
    workers = _workers(query.get("initial_workers"), "initial_workers", state.config.settings.workers)
    # inferline's own parameters: how to run the model (a SavedModel signature, a Hugging Face task).
    options = {key: query[key] for key in REGISTER_OPTIONS if query.get(key)}
    served = await _catalog(state).register(
        url, name, settings, framework=query.get("framework"), metadata={**preprocessing(query), **options}
    )
    if workers != served.batcher.workers:
        await served.scale(workers, workers)
    version = served.metadata.get("model_version") or served.version
    return json_response(
        {
            "status": f'Model "{name}" Version: {version} registered with {workers} initial workers',
            "modelName": name,
            "modelVersion": version,
            "storeVersion": served.version,
            "batchSize": settings.batch_size,
        }
    )


def preprocessing(query: Any) -> dict[str, Any]:
    """The image settings given as query parameters (`resize=28,28&mode=L&scale=255`), checked."""
    from inferline.serve.images import IMAGE_KEYS, settings_of

    meta: dict[str, Any] = {}
    for key in IMAGE_KEYS:
        text = query.get(key)
        if text is None:
            continue
        parts = [part.strip() for part in text.strip("[]").split(",")]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if key in ("mode", "layout"):
            meta[key] = text
        elif key == "resize" and numbers and all(n.is_integer() for n in numbers):
            meta[key] = [int(n) for n in numbers]
        elif key in ("mean", "std") and numbers:
            meta[key] = numbers
        elif key == "scale" and len(numbers) == 1:
            meta[key] = numbers[0]
        else:
            raise bad_request(
                f"POST /models: {key}={text!r}; expected numbers such as {key}={_EXAMPLES[key]}"
            )
    try:
        settings_of(meta)
    except (InferlineError, TypeError, ValueError) as exc:
        raise bad_request(f"POST /models: {exc}") from exc
    return meta


_EXAMPLES = {"resize": "224,224", "scale": "255", "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}


async def scale_workers(request: Request) -> Response:
    """TorchServe's scale workers: `min_worker` model calls at once for the version (default:
    the default version); answered once they run with `synchronous=true`, else 202 at once."""
    state = server_of(request)
    name = request.path_params["name"]
    query = request.query_params
    version = request.path_params.get("version") or query.get("model_version")
    where = f"PUT {request.url.path}"
    minimum = _workers(query.get("min_worker"), "min_worker", 1, where=where)
    maximum = _workers(query.get("max_worker"), "max_worker", minimum, where=where)
    if maximum < minimum:
        raise bad_request(f"{where}: max_worker cannot be less than min_worker ({maximum} < {minimum})")
    served = await state.resolve(name, version)
    if version is None:  # versions swapped in later keep the model's scale
        model = state.models.models[name]
        model.settings = replace(model.settings, workers=minimum, max_workers=maximum)
    message = f"Workers scaled to {minimum} for model: {name}" + (f", version: {version}" if version else "")
    if query.get("synchronous", "").lower() == "true":
        await served.scale(minimum, maximum)
        return json_response({"status": message})
    state.background(served.scale(minimum, maximum))
    return json_response({"status": "Processing worker updates..."}, status=202)


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


MAX_WORKERS = 64  # model calls at once per version: threads of this process


def _workers(value: str | None, name: str, default: int, *, where: str = "POST /models") -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) > MAX_WORKERS:
        raise bad_request(f"{where}: {name}={value!r}; expected a whole number from 0 to {MAX_WORKERS}")
    return int(value)


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
        Route("/models/{name}", guarded(scale_workers), methods=["PUT"]),
        Route("/models/{name}/{version}", guarded(describe_model), methods=["GET"]),
        Route("/models/{name}/{version}", guarded(unregister), methods=["DELETE"]),
        Route("/models/{name}/{version}", guarded(scale_workers), methods=["PUT"]),
        Route("/models/{name}/{version}/set-default", guarded(set_default), methods=["PUT"]),
    ]
