"""peer_metrics.merge: several processes' metrics as one scrape."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from inferline.serve.metrics import ServerMetrics
from inferline.serve.peer_metrics import merge


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_counts_add_up_and_the_loaded_versions_do_not() -> None:
    main, other = ServerMetrics(), ServerMetrics()
    for metrics, answered in ((main, 2), (other, 3)):
        metrics.set_versions({"iris": (["1"], "1")})
        for _ in range(answered):
            metrics.request("iris", 200, 0.002)
    other.request("iris", 503, None)
    merged = samples(merge([main.render(), other.render()], missing=1))
    assert merged[("inferline_requests_total", (("model", "iris"), ("status", "200")))] == 5
    assert merged[("inferline_requests_total", (("model", "iris"), ("status", "503")))] == 1
    assert merged[("inferline_request_latency_seconds_count", (("model", "iris"),))] == 5
    assert merged[("ts_inference_requests_total", (("model_name", "iris"),))] == 6
    assert merged[("Requests2XX", ())] == 5 and merged[("Requests5XX", ())] == 1
    loaded = ("inferline_model_version_loaded", (("default", "true"), ("model", "iris"), ("version", "1")))
    assert merged[loaded] == 1
    assert merged[("inferline_metrics_processes_missing", ())] == 1
