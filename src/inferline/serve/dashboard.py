"""`GET /`: a live dashboard page; `GET /dashboard/stats`: the JSON it refreshes from.

The page is one HTML document with inline CSS and a small script (no CDN, works offline):
every second it fetches `/dashboard/stats` and redraws the loaded models and versions,
requests/s, latency p50/p99 and batch sizes of the last minutes as inline SVG. Shown numbers
carry ids and `data-value`s (`#requests-total`, `#latency-p50`, `#models tr[data-model]`,
`#chart-requests rect.bar[data-value]`), so tests and scripts can read them.

Example:
    curl -s 127.0.0.1:8080/dashboard/stats?window=60 | python -m json.tool
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from inferline.serve.http import ApiError
from inferline.serve.state import ServerState, server_of

DEFAULT_WINDOW_S = 120


def stats(state: ServerState, window_s: int) -> dict[str, Any]:
    """Loaded models with their versions, plus the recent per-second samples."""
    snapshot = state.metrics.recent.snapshot(window_s=window_s)
    loaded = []
    for name in state.models.names():
        model = state.models.models[name]
        versions = sorted(model.versions, key=lambda v: (0, int(v)) if v.isdigit() else (1, v))
        ids = {v: served.model_id for v, served in model.versions.items()}
        loaded.append(
            {
                "name": name,
                "versions": versions,
                "default": model.default,
                "model_ids": [ids[v] for v in versions],
            }
        )
    return {"loaded": loaded, "ready": state.ready, **snapshot}


async def stats_route(request: Request) -> Response:
    raw = request.query_params.get("window", str(DEFAULT_WINDOW_S))
    if not raw.isdigit() or not 1 <= int(raw) <= 3600:
        raise ApiError(
            400,
            "BadRequestException",
            f"GET /dashboard/stats: window={raw!r}; expected whole seconds from 1 to 3600",
        )
    state = server_of(request)
    payload = stats(state, int(raw))
    if state.warehouse is not None:
        payload["warehouse"] = await run_in_threadpool(state.warehouse.snapshot)
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


async def page_route(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [
        Route("/", page_route, methods=["GET"]),
        Route("/dashboard", page_route, methods=["GET"]),
        Route("/dashboard/stats", stats_route, methods=["GET"]),
    ]


def _page() -> str:
    from importlib import resources

    text = resources.files("inferline.serve").joinpath("dashboard.html").read_text(encoding="utf-8")
    return text.replace("__WINDOW__", str(DEFAULT_WINDOW_S))


PAGE = _page()
