"""What a web page must not do to the server: manage models from another origin, load pickles.

A browser sends requests to `127.0.0.1` for any page the operator opens. Management routes
(`POST/PUT/DELETE /models...`) therefore refuse a state-changing request that a browser marks
as coming from another origin (`Origin`, `Sec-Fetch-Site`) unless `--allow-origin` lists it,
and refuse "simple" requests (form and text bodies, which a page may send cross-site without
asking) that carry no custom header. On a loopback bind they also refuse a `Host` that is not
loopback, so a DNS-rebound page cannot pass as same-origin. A file registered over HTTP is
only unpickled when its folder is listed in `INFERLINE_TRUSTED_PATHS`; safe formats (`.onnx`,
`.skops`, `.keras`, TorchScript, booster files, Hugging Face safetensors) need no listing.

Example:
    >>> check_browser_request(request, allow_origins=("http://localhost:3000",))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import zipfile

from starlette.requests import Request

from inferline.errors import InferlineError
from inferline.models.base import detect_framework, ensure_trusted, is_remote_uri
from inferline.models.files import local_copy
from inferline.serve.hosts import is_loopback
from inferline.serve.http import ApiError

log = logging.getLogger("inferline.serve")

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Content types a page may send cross-site without a CORS preflight.
SIMPLE_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})
TREES = ("xgboost", "lightgbm", "catboost")
PICKLES = ("joblib", "pkl", "pickle")
SAFETENSORS = "model.safetensors"


def forbidden(request: Request, reason: str) -> ApiError:
    where = f"{request.method} {request.url.path}"
    log.warning("refused %s: %s", where, reason)
    return ApiError(403, "Forbidden", f"{where}: {reason}")


def check_browser_request(
    request: Request, *, allow_origins: tuple[str, ...] = (), loopback_only: bool = False
) -> None:
    """Raise a 403 for a management request a web page could have sent without the user."""
    host = request.url.hostname or ""
    if loopback_only and not is_loopback(host):
        raise forbidden(
            request, f"Host {host!r} is not a loopback name; this server only manages models via 127.0.0.1"
        )
    if request.method not in STATE_CHANGING:
        return
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None:
        if origin != own and origin.rstrip("/") not in allow_origins:
            raise forbidden(
                request,
                f"refusing a request from the web page origin {origin!r} (this server is {own}); "
                f"start the server with --allow-origin {origin} to let that page manage models",
            )
    else:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in SAME_ORIGIN_SITES:
            raise forbidden(request, f"refusing a {site} browser request (Sec-Fetch-Site: {site})")
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type in SIMPLE_TYPES and not _has_custom_header(request):
        raise forbidden(
            request,
            f"refusing a {content_type} body, which any web page can send; send no body or "
            "application/json, or add a header such as X-Requested-With: inferline",
        )


def _has_custom_header(request: Request) -> bool:
    # A page must pass a CORS preflight (which this server never grants) to set these.
    return any(name == "authorization" or name.startswith("x-") for name in request.headers.keys())


def check_registrable(url: str, framework: str | None) -> None:
    """Refuse to register over HTTP a file whose loading can run code, unless it is listed.

    Checked before the file enters the store, where the watcher or a restart would load it.
    """
    try:
        kind = framework or detect_framework(url)
    except InferlineError:
        return  # the store refuses unknown formats with its own message
    if kind in ("onnx", "remote"):
        return
    suffix = url.rsplit("/", 1)[-1].rpartition(".")[2].lower()
    if kind == "keras" and suffix == "keras":
        return  # loaded with safe_mode
    if kind in ("sklearn", "torch") and _is_safe_archive(url, kind):
        return
    if kind in TREES and suffix not in PICKLES:
        return  # booster files: trees, no code
    if kind == "huggingface" and os.path.isfile(os.path.join(url.removeprefix("file://"), SAFETENSORS)):
        return  # safetensors weights; config and tokenizer are JSON, and no remote code is run
    # TensorFlow SavedModels stay listed-only: their graphs may read and write files.
    ensure_trusted(url, what=f"{kind} file registered over HTTP (it could run code)", listed_only=True)


def _is_safe_archive(url: str, kind: str) -> bool:
    # skops files and TorchScript archives are zips; joblib, pickle and torch.save modules are not.
    if is_remote_uri(url) and kind == "torch":
        return False
    try:
        with local_copy(url) as path:
            if kind == "sklearn":
                return zipfile.is_zipfile(path)
            from inferline.models.torch import is_torchscript

            return is_torchscript(path)
    except (InferlineError, OSError):
        return False
