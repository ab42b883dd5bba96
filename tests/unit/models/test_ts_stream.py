"""Intermediate responses as TorchServe's own backend encodes them reach their request's listener."""

from __future__ import annotations

import pytest

from inferline.errors import ModelError
from inferline.models.ts_stream import IntermediateResponses, read_predict_response
from tests.lazy import LazyModule, requires

otf = LazyModule("ts.protocol.otf_message_handler")  # imports torch: only when a test runs
ts_context = LazyModule("ts.context")
pytestmark = requires("ts")


def torchserve_context(requests: int) -> object:
    """TorchServe's real `Context` for a batch of `requests` (what its backend builds)."""
    context = ts_context.Context("llm", "/tmp", {"model": {}}, requests, None, "0.12.0")
    context.request_processor = [ts_context.RequestProcessor({}) for _ in range(requests)]
    context.request_ids = {i: f"req-{i}" for i in range(requests)}
    return context


def test_torchserves_encoding_is_read_back_per_request() -> None:
    context = torchserve_context(3)
    context.set_response_content_type(1, "application/json")
    ret = [b"\x00raw", "tok\u00e9n", {"partial": [1, 2]}]
    message = otf.create_predict_response(ret, context.request_ids, "Intermediate", 200, context, True)
    answers = read_predict_response(bytes(message))
    assert [request_id for request_id, _ in answers] == ["req-0", "req-1", "req-2"]
    assert answers[0][1] == b"\x00raw" and answers[1][1] == "tok\u00e9n".encode()
    assert answers[2][1] == b'{\n  "partial": [\n    1,\n    2\n  ]\n}'  # TorchServe's json.dumps(indent=2)


def test_each_listener_gets_only_its_requests_pieces() -> None:
    sink = IntermediateResponses()
    got: dict[str, list[bytes]] = {"req-0": [], "req-2": []}
    sink.listen("req-0", got["req-0"].append)
    sink.listen("req-2", got["req-2"].append)
    context = torchserve_context(3)
    for step in range(2):
        ret = [f"a{step}", f"b{step}", f"c{step}"]
        sink.sendall(otf.create_predict_response(ret, context.request_ids, "", 200, context, True))
    sink.forget("req-2")
    sink.sendall(otf.create_predict_response(["a2", "b2", "c2"], context.request_ids, "", 200, context, True))
    assert got == {"req-0": [b"a0", b"a1", b"a2"], "req-2": [b"c0", b"c1"]}  # req-1 had no listener


def test_a_truncated_message_is_a_model_error() -> None:
    context = torchserve_context(1)
    message = bytes(otf.create_predict_response(["x"], context.request_ids, "", 200, context, True))
    with pytest.raises(ModelError, match="intermediate response is cut short at byte"):
        read_predict_response(message[:-6])
