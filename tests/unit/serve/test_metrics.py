"""ServerMetrics.request: the counts kept between renders and added to the values directly
render exactly what inc()/observe() per request render."""

from __future__ import annotations

from typing import Any

import pytest

from inferline.serve import metrics as metrics_module
from inferline.serve.metrics import ServerMetrics

# On, just under and just over bucket bounds, beyond the last bound, and failures (no latency).
REQUESTS = [
    ("cnn", 200, 0.0005),
    ("cnn", 200, 0.00050001),
    ("cnn", 200, 0.0),
    ("cnn", 200, 0.005),
    ("cnn", 200, 4.9999),
    ("cnn", 200, 5.0),
    ("cnn", 200, 12.5),
    ("cnn", 503, None),
    ("", 404, None),
    ("iris", 499, None),
    ("iris", 200, 0.3),
]


def rendered(server: ServerMetrics) -> list[str]:
    for model, status, seconds in REQUESTS:
        server.request(model, status, seconds)
    text = server.render().decode()
    return [line for line in text.splitlines() if "_created" not in line]  # creation times differ


def test_direct_updates_render_as_the_public_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    direct = rendered(ServerMetrics())

    def public(*args: Any) -> Any:
        return metrics_module._public_recorder(*args), metrics_module._nothing

    monkeypatch.setattr(metrics_module, "_request_recorder", public)
    public = rendered(ServerMetrics())
    assert direct == public
    assert 'inferline_requests_total{model="cnn",status="200"} 7.0' in direct
    assert 'inferline_request_latency_seconds_bucket{le="0.0005",model="cnn"} 2.0' in direct
    assert 'inferline_request_latency_seconds_bucket{le="5.0",model="cnn"} 6.0' in direct
    assert 'ts_inference_requests_total{model_name="cnn"} 8.0' in direct
    assert "Requests2XX 8.0" in direct and "Requests5XX 1.0" in direct and "Requests4XX 2.0" in direct


def test_unknown_internals_fall_back_to_the_public_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerMetrics()
    child = server.latency.labels("cnn")
    monkeypatch.setattr(child, "_upper_bounds", child._upper_bounds[:-1])  # not the layout expected
    server.request("cnn", 200, 0.002)
    monkeypatch.undo()
    assert "_public_recorder" in server._children[("cnn", 200)].__qualname__
    assert 'inferline_request_latency_seconds_count{model="cnn"} 1.0' in server.render().decode()


def test_requests_between_renders_are_added_once() -> None:
    server = ServerMetrics()
    server.request("cnn", 200, 0.002)
    server.request("cnn", 200, 0.003)
    first = server.render().decode()
    assert 'inferline_requests_total{model="cnn",status="200"} 2.0' in first
    server.request("cnn", 200, 0.02)
    server.request("cnn", 500, None)
    text = server.render().decode()
    assert text == server.render().decode()  # a render adds nothing by itself
    assert 'inferline_requests_total{model="cnn",status="200"} 3.0' in text
    assert 'inferline_request_latency_seconds_bucket{le="0.005",model="cnn"} 2.0' in text
    assert 'inferline_request_latency_seconds_bucket{le="0.025",model="cnn"} 3.0' in text
    assert 'inferline_request_latency_seconds_count{model="cnn"} 3.0' in text
    assert 'ts_inference_latency_microseconds{model_name="cnn"} 25000.0' in text
    assert "Requests2XX 3.0" in text and "Requests5XX 1.0" in text
