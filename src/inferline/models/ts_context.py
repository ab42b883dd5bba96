"""What TorchServe hands its handlers: the `Context` and each request's item and headers.

`TorchServeContext` is TorchServe's `Context` as handlers use it: `manifest`,
`system_properties` (`model_dir`, `gpu_id`, `batch_size`), `metrics`, and per request of the
batch being handled its id and headers (`get_request_id(idx)`, `get_request_header(idx, key)`,
`get_all_request_header(idx)`, `request_processor[idx]`). Each worker has its own context, as
each TorchServe worker process has.

A front door hands a `.mar` model `TorchServeRequest`s: the item TorchServe would build
(`{"body": ...}`, form fields) and the HTTP headers, which the handler sees only through the
context, never inside the item; and, for a streamed answer (gRPC `StreamPredictions`), the
listener its intermediate responses go to (`context.cl_socket`, `inferline.models.ts_stream`).

Example:
    >>> context = TorchServeContext("mnist", {"model": {}}, {"model_dir": "/tmp/m"})
    >>> context.start_batch([{"x-trace": "abc"}])
    >>> context.get_request_header(0, "X-Trace")
    'abc'
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from inferline.models.ts_stream import IntermediateResponses, Listener

SEQUENCE_ID = "ts_request_sequence_id"
SEQUENCE_START = "ts_request_sequence_start"
SEQUENCE_END = "ts_request_sequence_end"


@dataclass
class TorchServeRequest:
    """One request for a handler: its TorchServe item and its headers (names lowercased)."""

    item: Any
    headers: dict[str, str] = field(default_factory=dict)
    listener: Listener | None = None  # gets the handler's intermediate responses, if streamed


class TorchServeMetrics:
    """The `context.metrics` handlers call (`add_time`, `add_counter`, ...): values are kept
    by name, last one wins; inferline's own metrics time every batch already."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def _add(self, name: str, value: float = 1.0, *args: Any, **kwargs: Any) -> None:
        self.values[name] = float(value)

    add_time = add_counter = add_size = add_percent = add_metric = _add

    def add_error(self, name: str, value: Any) -> None:
        self.values[name] = float("nan")


class RequestProcessor:
    """TorchServe's per-request `context.request_processor[idx]`: its headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self.response_headers: dict[str, str] = {}

    def get_request_property(self, key: str) -> str | None:
        return self._headers.get(key.lower())

    def get_request_properties(self) -> dict[str, str]:
        return dict(self._headers)

    def add_response_property(self, key: str, value: str) -> None:
        self.response_headers[key] = value

    def report_status(self, code: int, reason: str | None = None) -> None:
        pass


@dataclass
class TorchServeContext:
    """TorchServe's `Context`: what handlers read in `initialize` and `handle`."""

    model_name: str
    manifest: dict[str, Any]
    system_properties: dict[str, Any]
    metrics: TorchServeMetrics = field(default_factory=TorchServeMetrics)
    model_yaml_config: dict[str, Any] = field(default_factory=dict)
    request_ids: dict[int, str] | None = None
    request_processor: list[RequestProcessor] = field(default_factory=list)
    stopping_criteria: Any = None
    # Where `send_intermediate_predict_response` writes, as to TorchServe's backend socket.
    cl_socket: IntermediateResponses = field(default_factory=IntermediateResponses)
    # The request headers of a sequence (gRPC StreamPredictions2), by TorchServe's names.
    header_key_sequence_id: str = SEQUENCE_ID
    header_key_sequence_start: str = SEQUENCE_START
    header_key_sequence_end: str = SEQUENCE_END

    def start_batch(self, headers: list[dict[str, str]]) -> None:
        """The batch about to be handled: one id and header set per request."""
        self.request_ids = {i: uuid.uuid4().hex for i in range(len(headers))}
        self.request_processor = [RequestProcessor(h) for h in headers]

    def get_request_id(self, idx: int = 0) -> str | None:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        if idx >= len(self.request_processor):
            return None
        return self.request_processor[idx].get_request_property(key)

    def get_sequence_id(self, idx: int) -> str | None:
        return self.get_request_header(idx, self.header_key_sequence_id)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        if idx >= len(self.request_processor):
            return {}
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        pass

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        pass

    # What TorchServe's `create_predict_response` reads when a handler streams.
    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str]:
        return 200, ""

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].response_headers if idx < len(self.request_processor) else {}

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        if idx < len(self.request_processor):
            self.request_processor[idx].add_response_property(key, value)

    def for_worker(self) -> TorchServeContext:
        """A context of its own for another worker (same manifest and properties)."""
        return TorchServeContext(
            self.model_name,
            self.manifest,
            dict(self.system_properties),
            model_yaml_config=self.model_yaml_config,
        )
