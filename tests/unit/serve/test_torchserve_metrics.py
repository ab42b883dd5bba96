"""TorchServe's metric names next to inferline's, for dashboards and alerts made for TorchServe."""

from __future__ import annotations

from inferline.serve.metrics import ServerMetrics


def test_torchserve_metric_names_count_requests_latency_queue_time_and_status_classes() -> None:
    metrics = ServerMetrics()
    metrics.request("mnist", 200, 0.002)
    metrics.request("mnist", 200, 0.003)
    metrics.request("mnist", 422, None)
    metrics.request("", 404, None)
    metrics.request("mnist", 503, None)
    waited = metrics.queue_observer("mnist")
    waited(0.001)
    waited(0.0005)
    lines = set(metrics.render().decode().splitlines())
    assert 'ts_inference_requests_total{model_name="mnist"} 4.0' in lines
    assert 'ts_inference_latency_microseconds{model_name="mnist"} 5000.0' in lines
    assert 'ts_queue_latency_microseconds{model_name="mnist"} 1500.0' in lines
    assert {"Requests2XX 2.0", "Requests4XX 2.0", "Requests5XX 1.0"} <= lines
    assert any(line.startswith('inferline_requests_total{model="mnist",status="200"} 2.0') for line in lines)
