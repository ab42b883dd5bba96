"""`inferline serve --models STORE`: the model server (TorchServe + KServe v2 over HTTP, v2 gRPC)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import warnings
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Annotated

import typer

from inferline.commands.api_ports import ApiPorts
from inferline.errors import InferlineError, require
from inferline.serve.hosts import is_loopback

DEFAULT_GRPC_PORT = 8081
MAX_BODY = 16 * 2**20
MAX_QUEUE = 1024


def checked_origins(origins: list[str]) -> tuple[str, ...]:
    """`--allow-origin` values as browsers send them in `Origin` (scheme://host[:port])."""
    out = []
    for origin in origins:
        scheme, sep, rest = origin.rstrip("/").partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise InferlineError(
                f"serve: --allow-origin {origin!r}; expected an origin like http://localhost:3000"
            )
        out.append(f"{scheme}://{rest}")
    return tuple(out)


def address(host: str, port: int) -> str:
    """`host:port` as gRPC takes it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def api_ports(split: ApiPorts, processes: int) -> dict[str, int] | None:
    """The port split; with several processes /metrics answers in the main one (on the
    management port unless `--metrics-port` is given), adding up every process's metrics."""
    ports = split.ports()
    if processes > 1 and ports is not None and not split.metrics_port:
        ports["metrics"] = ports["management"]
    return ports


def bind(host: str, port: int, flag: str = "--port") -> socket.socket:
    """A socket bound to host:port, so a busy port fails in one line before the server announces
    itself (uvicorn would print its own error after our "serving ..." line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InferlineError(
                f"serve: port {port} on {host} is already in use (another inferline serve?); "
                f"stop that process or pass {flag} with a free port, e.g. {flag} {port + 1}"
            ) from None
        raise InferlineError(f"serve: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def grpc_free(host: str, port: int, flag: str = "--grpc-port") -> None:
    """A one-line error now, when an explicit gRPC port is busy, not a traceback at startup."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            busy = exc.errno == errno.EADDRINUSE
            raise InferlineError(
                f"serve: {flag} {port} on {host} is "
                + ("already in use" if busy else f"not available ({exc.strerror or exc})")
                + f"; pass a free {flag}, or {flag} 0 "
                + ("for no gRPC" if flag == "--grpc-port" else "to turn it off")
            ) from None


def torchserve_grpc(
    host: str,
    port: int | None,
    management_port: int | None,
    management_host: str,
    token: str | None,
    *,
    taken: dict[int, str] | None = None,
) -> tuple[str | None, str | None]:
    """The addresses of TorchServe's gRPC inference and management APIs (None: off).

    `--ts-grpc-port P` serves inference on `host:P` and management on 127.0.0.1:P+1 (TorchServe's
    7070/7071 pair) unless `--ts-grpc-management-port` says otherwise (0 turns it off). `taken`
    maps the server's other ports to their flags.
    """
    if management_port is None and port:
        management_port = port + 1
    for flag, value in (("--ts-grpc-port", port), ("--ts-grpc-management-port", management_port)):
        if value is not None and not 0 <= value <= 65535:
            raise InferlineError(f"serve: {flag} {value}; expected 1-65535, or 0 to turn it off")
        if value and value in (taken or {}):
            raise InferlineError(
                f"serve: port {value} is both {(taken or {})[value]} and {flag}; give each API its own port"
            )
    if port and port == management_port:
        raise InferlineError(
            f"serve: --ts-grpc-port and --ts-grpc-management-port are both {port}; "
            "TorchServe's two gRPC APIs need two ports (e.g. 7070 and 7071)"
        )
    if management_port and not is_loopback(management_host) and not token:
        raise InferlineError(
            f"serve: --ts-grpc-management-host {management_host} exposes model management to the "
            "network; pass --token TOKEN (or leave it on 127.0.0.1)"
        )
    for flag, bind_host, value in (
        ("--ts-grpc-port", host, port),
        ("--ts-grpc-management-port", management_host, management_port),
    ):
        if value:
            grpc_free(bind_host, value, flag)
    return (
        address(host, port) if port else None,
        address(management_host, management_port) if management_port else None,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        models: Annotated[
            list[str] | None,
            typer.Option(
                "--models",
                help="Model store folder or URI (default model_store); or name=x.mar / x.mar / all "
                "(repeatable), TorchServe's way.",
                show_default=False,
            ),
        ] = None,
        model_store: Annotated[
            str | None,
            typer.Option("--model-store", help="A folder of TorchServe .mar archives (TorchServe's flag)."),
        ] = None,
        host: Annotated[
            str | None,
            typer.Option(
                help="Address to bind (default 127.0.0.1; 0.0.0.0 under Vertex AI); anything but "
                "loopback needs --token.",
                show_default=False,
            ),
        ] = None,
        port: Annotated[
            int | None,
            typer.Option(help="Port to listen on (default 8080, or $AIP_HTTP_PORT).", show_default=False),
        ] = None,
        grpc_port: Annotated[
            int | None,
            typer.Option(
                help="Port of the KServe v2 gRPC API on the same host (default 8081, skipped with a "
                "warning if busy; 0 turns it off)."
            ),
        ] = None,
        ts_grpc_port: Annotated[
            int | None,
            typer.Option(
                help="Port of TorchServe's gRPC inference API (TorchServe uses 7070; off by default); "
                "its management API then listens on 127.0.0.1 and the next port.",
                show_default=False,
            ),
        ] = None,
        ts_grpc_management_port: Annotated[
            int | None,
            typer.Option(
                help="Port of TorchServe's gRPC management API (default --ts-grpc-port + 1; 0: off).",
                show_default=False,
            ),
        ] = None,
        ts_grpc_management_host: Annotated[
            str,
            typer.Option(
                help="Address TorchServe's gRPC management API binds; anything but loopback needs --token."
            ),
        ] = "127.0.0.1",
        management_port: Annotated[
            int | None,
            typer.Option(
                help="Serve the management API (/models...) only on this port, on 127.0.0.1 "
                "(TorchServe's 8081).",
                show_default=False,
            ),
        ] = None,
        metrics_port: Annotated[
            int | None,
            typer.Option(help="Serve /metrics only on this port (TorchServe's 8082).", show_default=False),
        ] = None,
        ts_config: Annotated[
            str | None,
            typer.Option(
                "--ts-config",
                help="TorchServe's config.properties (addresses, model_store, load_models, workers, "
                "models' batch settings); flags win over it.",
                show_default=False,
            ),
        ] = None,
        token: Annotated[
            str | None,
            typer.Option(help="Bearer token required by the management API.", envvar="INFERLINE_TOKEN"),
        ] = None,
        max_body: Annotated[
            int | None,
            typer.Option(help="Largest request body in bytes (else 413).", show_default=str(MAX_BODY)),
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Most rows per model call.")] = 32,
        max_batch_delay: Annotated[
            float, typer.Option(help="Most milliseconds a request waits for others to batch with.")
        ] = 5.0,
        max_queue: Annotated[
            int | None,
            typer.Option(
                help="Requests waiting per model version before answering 503.", show_default=str(MAX_QUEUE)
            ),
        ] = None,
        watch_interval: Annotated[
            float, typer.Option(help="Seconds between checks of the store for new versions (0: never).")
        ] = 1.0,
        max_image_pixels: Annotated[
            int, typer.Option(help="Largest image (width x height) an image/* body may decode to (else 413).")
        ] = 40_000_000,
        allow_origin: Annotated[
            list[str] | None,
            typer.Option(help="A web page origin allowed to manage models (repeatable).", show_default=False),
        ] = None,
        warehouse: Annotated[
            str | None,
            typer.Option(help="DuckDB warehouse whose table row counts the dashboard shows."),
        ] = None,
        processes: Annotated[
            int,
            typer.Option(
                help="Server processes answering inference on --port (one per core uses every core; "
                "more than 1 needs --management-port).",
            ),
        ] = 1,
    ) -> None:
        """Serve every model in the store over HTTP (TorchServe and KServe v2 APIs)."""
        from inferline.commands.ts_config import TsConfig, merged, model_settings, read_ts_config
        from inferline.commands.vertex import Serving, vertex_settings

        given = Serving(host, port, list(models or []), model_store, token, grpc_port)
        ts = read_ts_config(ts_config) if ts_config else TsConfig()
        if ts.ignored:
            print(
                f"serve: --ts-config {ts_config}: ignoring {', '.join(ts.ignored)}",
                file=sys.stderr,
                flush=True,
            )
        serving, vertex_note = vertex_settings(merged(given, ts), os.environ)
        host, port, token, grpc_port = (
            serving.host or "127.0.0.1",
            serving.port or 8080,
            serving.token,
            serving.grpc_port,
        )
        models, model_store = serving.models, serving.model_store
        max_body = max_body if max_body is not None else ts.max_body or MAX_BODY
        max_queue = max_queue if max_queue is not None else ts.max_queue or MAX_QUEUE
        ts_grpc_port = ts_grpc_port if ts_grpc_port is not None else ts.grpc_inference_port
        if ts_grpc_management_port is None:
            ts_grpc_management_port = ts.grpc_management_port
        split = ApiPorts(
            host,
            port,
            management_port=management_port or (ts.management_port if ts.management_port != port else None),
            management_host=ts.management_host or "127.0.0.1",
            metrics_port=metrics_port or (ts.metrics_port if ts.metrics_port != port else None),
            metrics_host=ts.metrics_host,
        )
        if vertex_note:
            print(vertex_note, file=sys.stderr, flush=True)
        if token is not None:
            if not token.strip():
                raise InferlineError("serve: --token is empty or whitespace; pass a real secret")
            token = token.strip()
        origins = checked_origins(allow_origin or [])
        split.check(token)
        if processes > 1 and not split.management_port:
            raise InferlineError(
                f"serve: --processes {processes} needs --management-port PORT: management must "
                "answer in one process (e.g. --management-port 8081, as TorchServe)"
            )
        if not is_loopback(host) and not token and grpc_port is None:
            grpc_port = 0  # v2 gRPC's repository RPCs are management: not on the network without a token
        elif not is_loopback(host) and not token and grpc_port:
            raise InferlineError(
                f"serve: --grpc-port {grpc_port} on {host} exposes v2's repository RPCs; pass --token"
            )
        if grpc_port is not None and not 0 <= grpc_port <= 65535:
            raise InferlineError(f"serve: --grpc-port {grpc_port}; expected 1-65535, or 0 for no gRPC")
        for name, value in (
            ("--processes", processes),
            ("--batch-size", batch_size),
            ("--max-body", max_body),
            ("--max-queue", max_queue),
            ("--max-image-pixels", max_image_pixels),
        ):
            if value < 1:
                raise InferlineError(f"serve: {name} {value}; expected a positive number")
        from inferline.commands.archives import store_for

        store_root = store_for(models or [], model_store)
        require("starlette", "serve")
        uvicorn = require("uvicorn", "serve")
        from inferline.models.store import ModelStore
        from inferline.serve.app import create_app, event_loop, freeze_heap, http_protocol
        from inferline.serve.models import BatchSettings
        from inferline.serve.state import ServerConfig, ServerState

        # The server caps decoded pixels itself (--max-image-pixels), before Pillow would warn.
        warnings.filterwarnings("ignore", message=r"Image size .* decompression bomb")
        if grpc_port:
            grpc_free(host, grpc_port)
        v2_port = None if grpc_port == 0 else grpc_port or DEFAULT_GRPC_PORT
        taken = {p: flag for flag, _, p in split.sockets()} | ({v2_port: "--grpc-port"} if v2_port else {})
        ts_grpc, ts_grpc_management = torchserve_grpc(
            host, ts_grpc_port, ts_grpc_management_port, ts_grpc_management_host, token, taken=taken
        )
        listening = [bind(bind_host, bind_port, flag) for flag, bind_host, bind_port in split.sockets()]
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        workers = ts.workers if ts.workers is not None else 1
        settings = BatchSettings(
            batch_size=batch_size,
            max_batch_delay_ms=max_batch_delay,
            max_queue=max_queue,
            workers=workers,
            max_workers=workers,
            await_answered=processes > 1,  # see DynamicBatcher: one process needs its overlap
        )
        config = ServerConfig(
            token=token,
            max_body=max_body,
            settings=settings,
            model_settings=model_settings(ts, settings),
            ports=api_ports(split, processes),
            watch_interval=watch_interval,
            allow_origins=origins,
            max_image_pixels=max_image_pixels,
            loopback_only=is_loopback(split.manager_host),
            grpc_address=None if v2_port is None else address(host, v2_port),
            grpc_required=grpc_port is not None,
            ts_grpc_address=ts_grpc,
            ts_grpc_management_address=ts_grpc_management,
            warehouse=warehouse,
        )
        helpers: list[BaseProcess] = []
        pipes: list[Connection] = []
        counts = None
        if processes > 1:
            from inferline.serve.processes import share_cores, start_inference_processes
            from inferline.serve.shared_accept import open_counts

            share_cores(processes)
            counts = open_counts(processes)
            helpers, pipes = start_inference_processes(
                processes - 1, config, store_root, listening[0], counts
            )
        state = ServerState(config, store=ModelStore(store_root))
        if helpers:
            from inferline.serve.peer_metrics import PeerMetrics

            state.peers = PeerMetrics(pipes)
        assert state.catalog is not None
        loaded = state.catalog.load_all()
        if helpers and counts is not None:
            from inferline.serve.processes import wait_accepting

            wait_accepting(helpers, counts)
        grpc_note = f" and gRPC {config.grpc_address}" if config.grpc_address else ""
        if ts_grpc or ts_grpc_management:
            apis = [f"inference {ts_grpc}"] if ts_grpc else []
            apis += [f"management {ts_grpc_management}"] if ts_grpc_management else []
            grpc_note += f" and TorchServe gRPC ({', '.join(apis)})"
        if split.split:
            grpc_note += f" ({split.describe()})"
        if helpers:
            grpc_note += f" ({processes} processes)"
        print(
            f"serving {', '.join(loaded) or 'no models yet'} from {model_store or store_root} "
            f"on http://{host}:{port}" + grpc_note,
            file=sys.stderr,
            flush=True,
        )
        app = create_app(state)
        freeze_heap()
        server_config = uvicorn.Config(  # type: ignore[attr-defined]
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            loop=event_loop(config),
            http=http_protocol(),
        )
        sockets = listening
        if counts is not None:  # the inference socket is accepted in turn with the inference processes
            from inferline.serve.shared_accept import SharedSocketServer

            server = SharedSocketServer(server_config, shared=listening[0], counts=counts, index=0)
            sockets = listening[1:]
        else:
            server = uvicorn.Server(server_config)  # type: ignore[attr-defined]
        try:
            server.run(sockets=sockets)
        finally:
            if helpers:
                from inferline.serve.processes import stop_processes

                stop_processes(helpers)
