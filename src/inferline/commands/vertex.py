"""`inferline serve` under Vertex AI: its variables set the port, host and model store.

With `AIP_HTTP_PORT` set (Vertex AI's custom-container contract) the server listens on that
port on every interface, reads its models from `AIP_STORAGE_URI` (a folder of `.mar` files or
an inferline store) unless `--models`/`--model-store` say otherwise, and turns gRPC off (Vertex
routes one port). The management API stays behind a token: `INFERLINE_TOKEN`/`--token`, or a
random one nobody knows (management then refuses everything), since the container is reachable.

Example:
    >>> vertex_settings(Serving("127.0.0.1", 8080, [], None, None, None), {})  # doctest: +SKIP
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace

from inferline.commands.archives import archives_in
from inferline.errors import InferlineError
from inferline.serve.hosts import is_loopback

PORT = "AIP_HTTP_PORT"
STORAGE = "AIP_STORAGE_URI"


@dataclass(frozen=True)
class Serving:
    """Where and what `serve` serves; None: not given on the command line."""

    host: str | None
    port: int | None
    models: list[str]
    model_store: str | None
    token: str | None
    grpc_port: int | None


def vertex_settings(given: Serving, environ: Mapping[str, str]) -> tuple[Serving, str | None]:
    """`given` with Vertex AI's variables applied, and a note for the log (None outside Vertex)."""
    if not environ.get(PORT):
        return replace(given, host=given.host or "127.0.0.1", port=given.port or 8080), None
    text = environ[PORT]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InferlineError(f"serve: {PORT}={text!r}; expected a port number 1-65535")
    out = replace(
        given,
        host=given.host or "0.0.0.0",
        port=given.port or int(text),
        grpc_port=0 if given.grpc_port is None else given.grpc_port,
    )
    uri = environ.get(STORAGE)
    if uri and not given.models and given.model_store is None:
        has_archives = bool(archives_in(uri))  # a local folder, gs://, or any fsspec URI
        out = replace(out, model_store=uri) if has_archives else replace(out, models=[uri])
    note = f"Vertex AI: port {out.port} from {PORT}"
    if out.host is not None and not is_loopback(out.host) and not out.token:
        out = replace(out, token=secrets.token_urlsafe(32))
        note += "; management API locked (set INFERLINE_TOKEN to use it)"
    return out, note
