"""The server's HTTP/1.1 protocol: TorchServe's predictions answered without ASGI.

uvicorn's httptools protocol turns every request into an ASGI scope, message dicts, an
`asyncio.Event` and a task, then checks every answer header with two regexes and writes the
head and the body separately: with the app's request and response objects, about 145 us of
the event loop's CPU per request for a small `.mar` model (whose handler costs ~375 us).
`InferenceProtocol` is that protocol with one change: a request `PredictionsFastPath` claims
(`POST|PUT /predictions/{name}[/{version}]` on the inference port, a path without escapes)
is answered by a `PredictionsCycle`: its body is gathered from the parser's callbacks,
`ServerState.handle` (batcher, versions, metrics) is called directly and the answer goes out
in one `write()`. Bodies, errors, answers and counts are the routed endpoint's
(`serve/torchserve.py`): the same functions build them.

Every other request goes to the ASGI app exactly as uvicorn sends it. Both kinds of request
share uvicorn's connection handling: a `PredictionsCycle` has the attributes of uvicorn's
cycle that the protocol drives (`body` callbacks, `keep_alive`, `response_complete`,
`disconnected`, `message_event.set()`, `run_asgi`), so keep-alive, pipelining (answers in
order), HTTP/1.0, chunked bodies, `Expect: 100-continue`, graceful shutdown and
`--processes N`'s connection counting behave as before.

Example:
    >>> uvicorn.Config(app, http=InferenceProtocol)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol

from inferline.models.base import Prediction
from inferline.models.mar import FRAMEWORK as MAR
from inferline.serve import torchserve
from inferline.serve.answers import encode_answer, warning_header
from inferline.serve.fast_path import PredictionsFastPath
from inferline.serve.http import ApiError, error_response, too_large
from inferline.serve.models import ServedVersion
from inferline.serve.offload import THREAD_BODY_BYTES
from inferline.serve.state import THREAD_ANSWER_ROWS, ServerState
from inferline.serve.ts_bodies import is_json, is_multipart

log = logging.getLogger("inferline.serve")

Headers = list[tuple[bytes, bytes]]

FAST_METHODS = {b"POST": "POST", b"PUT": "PUT"}
PREFIX = b"/predictions/"
JSON_LINE = b"content-type: application/json\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


class InferenceProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering TorchServe's predictions requests itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.config.app
        fast = getattr(app, "fast_path", None)
        state = getattr(getattr(app, "state", None), "server", None)
        usable = isinstance(fast, PredictionsFastPath) and fast.enabled and isinstance(state, ServerState)
        # A root path or a concurrency limit changes what uvicorn answers: leave those to it.
        self.fast = fast if usable and not self.root_path and self.limit_concurrency is None else None
        self.state: ServerState = state  # type: ignore[assignment]

    def on_message_begin(self) -> None:
        if self.fast is None:
            super().on_message_begin()
            return
        # The ASGI scope is built in on_headers_complete, and only for the app's requests.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        if self.fast is None:
            super().on_headers_complete()
            return
        cycle = self._predictions_cycle()
        if cycle is None:  # the app's request: the scope uvicorn's on_message_begin builds
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.expect_100_continue = url, expect
            self.headers.extend(headers)
            super().on_headers_complete()
            return
        previous = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:  # pipelined: answered in turn, as uvicorn queues its own cycles
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle  # uvicorn's cycle or a PredictionsCycle
        if type(cycle) is PredictionsCycle:
            cycle.receive(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is PredictionsCycle:
            cycle.complete()
        else:
            super().on_message_complete()

    def _predictions_cycle(self) -> PredictionsCycle | None:
        """A cycle for this request when it is a predictions request the fast path claims."""
        assert self.fast is not None
        parser = self.parser
        method = FAST_METHODS.get(parser.get_method())
        url = self.url
        if method is None or not url.startswith(PREFIX) or b"%" in url or b"#" in url:
            return None
        if parser.should_upgrade():
            return None
        try:
            path = url.partition(b"?")[0].decode("ascii")
        except UnicodeDecodeError:
            return None
        found = self.fast.match_path(method, path, self.server[1] if self.server else None)
        if found is None:
            return None
        http_version = parser.get_http_version()
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        return PredictionsCycle(
            self, *found, method=method, path=path, http_version=http_version, keep_alive=keep_alive
        )


class PredictionsCycle:
    """One predictions request of an `InferenceProtocol` connection, from its head to its answer."""

    def __init__(
        self,
        protocol: InferenceProtocol,
        name: str,
        version: str | None,
        *,
        method: str,
        path: str,
        http_version: str,
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.state = protocol.state
        self.name = name
        self.version = version
        self.method = method
        self.path = path
        self.http_version = http_version
        self.target = protocol.url  # for the access log: path and query string, as uvicorn logs
        self.keep_alive = keep_alive
        self.headers: Headers = protocol.headers
        self.waiting_for_100_continue = protocol.expect_100_continue
        self.chunks: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = self  # uvicorn's connection_lost wakes the cycle with .set()
        self._waiter: asyncio.Future[None] | None = None
        self.content_type = ""
        self.content_length: int | None = None
        for header, value in self.headers:  # the first of each, as Starlette's Headers.get
            if header == b"content-type" and not self.content_type:
                self.content_type = value.decode("latin-1")
            elif header == b"content-length" and self.content_length is None and value.isdigit():
                self.content_length = int(value)

    # The protocol's side: body bytes, the end of the message, a lost connection.
    def receive(self, body: bytes) -> None:
        if self.response_complete:
            return  # answered already (an error): the rest of the body is dropped
        self.size += len(body)
        if self.size > self.state.config.max_body:
            self.chunks.clear()
            self.set()  # answered 413 now
        else:
            self.chunks.append(body)

    def complete(self) -> None:
        self.more_body = False
        self.set()

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # The request's task.
    async def run_asgi(self, app: Any) -> None:
        """Answer the request (`app`, the ASGI app uvicorn passes, is not needed)."""
        try:
            status, head, body = await self.state.handle(self.name, self.version, self.decode, self.encode)
        except ApiError as exc:
            status, head, body = response_parts(error_response(exc, self.path))
        except ClientDisconnect:
            return  # counted as 499; nobody to answer
        except Exception as exc:  # what the app's exception handler answers
            log.exception("route %s failed", self.path)
            error = ApiError(500, "InternalServerException", f"{self.path}: {type(exc).__name__}: {exc}")
            status, head, body = response_parts(error_response(error, self.path))
        try:
            self.respond(status, head, body)
        except Exception:  # e.g. a header value that would split the answer: as uvicorn's run_asgi
            log.exception("route %s: the answer could not be sent", self.path)
            if not self.response_complete and not self.protocol.transport.is_closing():
                self.protocol.transport.write(INTERNAL_ERROR)
            self.protocol.transport.close()

    async def decode(self, served: ServedVersion) -> tuple[Any, Any]:
        """The body as rows for `served`, as `ServerState.infer` reads and parses it."""
        max_body = self.state.config.max_body
        if self.content_length is not None and self.content_length > max_body:
            raise too_large(self.content_length, max_body)
        if self.waiting_for_100_continue:
            self.waiting_for_100_continue = False
            if not self.protocol.transport.is_closing():
                self.protocol.transport.write(CONTINUE)
        if self.more_body and not self.disconnected and self.size <= max_body:
            self.protocol.flow.resume_reading()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.disconnected:
            raise ClientDisconnect()
        if self.size > max_body:
            raise too_large(self.size, max_body)
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        content_type = self.content_type
        headers = handler_headers(self.headers) if served.framework == MAR else None
        if headers is not None and len(body) < THREAD_BODY_BYTES and is_raw(content_type):
            # What parse_body makes of raw bytes for a handler (`{"body": bytes}`), which no
            # body can fail: without its layers, the common TorchServe request (`curl -T`).
            return torchserve.mar_rows([{"body": body}], headers), None
        route = f"{self.method} /predictions/{served.name}"
        offload = self.state.offload

        def parse() -> tuple[Any, Any]:
            return torchserve.parse_body(
                body, content_type, served, route=route, offload=offload, headers=headers
            )

        return await self.state.parse_body(parse, len(body), content_type, served)

    def encode(self, served: ServedVersion, prediction: Prediction, context: Any) -> Any:
        if len(prediction.prediction) >= THREAD_ANSWER_ROWS:  # an awaitable: `handle` awaits it
            return self.state.offload.thread(answer_parts, served, prediction, context)
        return answer_parts(served, prediction, context)

    def respond(self, status: int, head: bytes, body: bytes) -> None:
        """Write the answer in one piece, as uvicorn would have written it; `head` is the
        answer's own header lines."""
        protocol = self.protocol
        if self.disconnected:
            return  # as uvicorn's send(): nobody to answer
        if protocol.access_log:
            client = f"{protocol.client[0]}:{protocol.client[1]}" if protocol.client else ""
            target = self.target.decode("latin-1")
            line = '%s - "%s %s HTTP/%s" %d'
            protocol.access_logger.info(line, client, self.method, target, self.http_version, status)
        self.response_complete = True
        self.waiting_for_100_continue = False
        protocol.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    default_lines(protocol.server_state.default_headers),
                    b"content-length: %d\r\n" % len(body),
                    head,
                    b"\r\n" if self.keep_alive else b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()


_DEFAULT_LINES: list[Any] = [None, b""]


def default_lines(headers: Headers) -> bytes:
    """uvicorn's default headers (`date`, `server`) as header lines; uvicorn replaces the list
    once a second (the date), so the lines are made once per list."""
    if headers is not _DEFAULT_LINES[0]:
        _DEFAULT_LINES[:] = [headers, header_lines(headers)]
    lines: bytes = _DEFAULT_LINES[1]
    return lines


def header_lines(headers: Headers) -> bytes:
    """`name: value\\r\\n` lines, refusing values that would split the answer (as uvicorn)."""
    for name, value in headers:
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError(f"invalid value of answer header {name.decode('latin-1')}: {value!r}")
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


@functools.lru_cache(maxsize=1024)
def model_id_line(model_id: str) -> bytes:
    return header_lines([(b"x-model-id", model_id.encode("latin-1"))])


def answer_parts(served: ServedVersion, prediction: Prediction, context: Any) -> tuple[int, bytes, bytes]:
    """The predictions answer as `(status, header lines, body)`: what `ServerState.infer` sends."""
    answer = torchserve.render_predictions(served, prediction, context)
    if isinstance(answer, Response):
        status, head, body = response_parts(answer)
        return status, head + model_id_line(served.model_id), body
    body, replaced = encode_answer(answer)
    head = JSON_LINE + model_id_line(served.model_id)
    if replaced:
        log.warning("model %s: %d non-finite outputs sent as null", served.model_id, replaced)
        warning = warning_header(served.model_id, replaced).items()
        head = header_lines([(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in warning]) + head
    return 200, head, body


def response_parts(response: Response) -> tuple[int, bytes, bytes]:
    """A Starlette response's status, header lines (without content-length) and body."""
    headers = [(name, value) for name, value in response.raw_headers if name != b"content-length"]
    return response.status_code, header_lines(headers), bytes(response.body)


def is_raw(content_type: str) -> bool:
    """Bytes a TorchServe handler gets as they are (`ts_bodies.request_items`): not a form, not JSON."""
    return not content_type or not (is_multipart(content_type) or is_json(content_type))


def handler_headers(headers: Headers) -> dict[str, str]:
    """The headers a TorchServe handler reads (`torchserve.handler_headers` for raw headers)."""
    return {
        name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name != b"authorization"
    }
