"""A TorchServe handler's intermediate responses, routed to the requests they answer.

A streaming handler (an LLM sending tokens) calls TorchServe's
`send_intermediate_predict_response(ret, context.request_ids, message, code, context)` before
its final `return`; TorchServe's backend encodes that with `create_predict_response` and writes
it to `context.cl_socket`, and the frontend sends each piece on as one message of the request's
stream (gRPC `StreamPredictions`). Here `context.cl_socket` is an `IntermediateResponses`: it
reads that encoding back and hands each request's piece to the listener its front door
registered under the request's id (requests without a listener drop theirs, as a unary answer
has nowhere to put them).

Example:
    >>> sink = IntermediateResponses()
    >>> sink.listen("req-1", print)
    >>> sink.sendall(create_predict_response(["tok"], {0: "req-1"}, "", 200, context, True))  # doctest: +SKIP
    b'tok'
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

from inferline.errors import ModelError

Listener = Callable[[bytes], None]
END_OF_LIST = -1


class IntermediateResponses:
    """`context.cl_socket` for handlers: intermediate responses go to their request's listener."""

    def __init__(self) -> None:
        self._listeners: dict[str, Listener] = {}
        self._lock = threading.Lock()

    def listen(self, request_id: str, listener: Listener) -> None:
        with self._lock:
            self._listeners[request_id] = listener

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._listeners.pop(request_id, None)

    def sendall(self, message: bytes | bytearray) -> None:
        """What a handler's `send_intermediate_predict_response` writes (the socket's method)."""
        for request_id, value in read_predict_response(bytes(message)):
            with self._lock:
                listener = self._listeners.get(request_id)
            if listener is not None:
                listener(value)


def read_predict_response(message: bytes) -> list[tuple[str, bytes]]:
    """(request id, value bytes) of each answer in a TorchServe predict response.

    The layout is `create_predict_response`'s: status code, message, then per request its id,
    content type, HTTP status and phrase, headers and value, and -1 to end the list.
    """
    reader = _Reader(message)
    reader.integer()  # the batch's status code
    reader.text()  # its message
    answers: list[tuple[str, bytes]] = []
    while True:
        size = reader.integer()
        if size == END_OF_LIST:
            return answers
        request_id = reader.take(size).decode("utf-8")
        reader.text()  # content type
        reader.integer()  # HTTP status
        reader.text()  # reason phrase
        for _ in range(reader.integer()):  # response headers
            reader.text()
            reader.text()
        answers.append((request_id, reader.take(reader.integer())))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def integer(self) -> int:
        (value,) = struct.unpack_from("!i", self.take(4))
        return int(value)

    def text(self) -> str:
        return self.take(self.integer()).decode("utf-8")

    def take(self, size: int) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise ModelError(
                f"a handler's intermediate response is cut short at byte {self.offset} of {len(self.data)} "
                "(expected what ts.protocol.otf_message_handler.create_predict_response writes)"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk
