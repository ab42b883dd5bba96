"""Prometheus metrics of one server: requests, latency, batch sizes, queue depth, versions.

Each app has its own `CollectorRegistry`, so several apps (tests) never share counters.
Label children are cached per model, so the request path does dictionary lookups only.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferline.serve.recent import RecentStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """The server's metrics; `render()` gives the Prometheus text format.

    Example:
        >>> metrics = ServerMetrics()
        >>> metrics.request("iris", 200, 0.002)
        >>> b"inferline_requests_total" in metrics.render()
        True
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "inferline_requests",
            "Inference requests by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inferline_request_latency_seconds",
            "Inference request latency, from body received to response ready.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "inferline_batch_size",
            "Rows per model call made by the dynamic batcher.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_latency = Histogram(
            "inferline_batch_predict_seconds",
            "Time of one batched model call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.versions = Gauge(
            "inferline_model_version_loaded",
            "1 for each loaded model version; label default=true marks the default one.",
            ["model", "version", "default"],
            registry=self.registry,
        )
        # TorchServe's names, so its dashboards and alerts keep working (gauges that only grow:
        # a Counter would add `_total` to the names TorchServe users query).
        self.ts_requests = Counter(
            "ts_inference_requests",
            "Inference requests by model (TorchServe's name).",
            ["model_name"],
            registry=self.registry,
        )
        self.ts_latency = Gauge(
            "ts_inference_latency_microseconds",
            "Total microseconds spent answering inference requests (TorchServe's name).",
            ["model_name"],
            registry=self.registry,
        )
        self.ts_queue = Gauge(
            "ts_queue_latency_microseconds",
            "Total microseconds requests waited in the queue before their batch ran (TorchServe's name).",
            ["model_name"],
            registry=self.registry,
        )
        self.ts_status = {
            klass: Gauge(
                f"Requests{klass}XX",
                f"Requests answered {klass}xx (TorchServe's name).",
                registry=self.registry,
            )
            for klass in (2, 4, 5)
        }
        # The last minutes, per second, for the dashboard (`GET /`).
        self.recent = RecentStats()
        self._children: dict[tuple[str, int], Callable[[float | None], None]] = {}
        self._flushes: list[Callable[[], None]] = []

    def request(self, model: str, status: int, seconds: float | None) -> None:
        record = self._children.get((model, status))
        if record is None:  # label look-ups once per (model, status): this runs per request
            record, flush = _request_recorder(
                [self.requests.labels(model, str(status)), self.ts_requests.labels(model)]
                + ([self.ts_status[status // 100]] if status // 100 in self.ts_status else []),
                self.ts_latency.labels(model),
                self.latency.labels(model),
            )
            self._children[(model, status)] = record
            self._flushes.append(flush)
        record(seconds)
        self.recent.request(model, status, seconds)

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        """A callback for `DynamicBatcher(on_batch=...)` recording size and duration."""
        sizes = self.batch_size.labels(model)
        durations = self.batch_latency.labels(model)
        recent = self.recent

        def observe(rows: int, seconds: float) -> None:
            sizes.observe(rows)
            durations.observe(seconds)
            recent.batch(model, rows, seconds)

        return observe

    def queue_observer(self, model: str) -> Callable[[float], None]:
        """A callback for `DynamicBatcher(on_wait=...)`: one request's seconds in the queue."""
        total = self.ts_queue.labels(model)

        def observe(seconds: float) -> None:
            total.inc(max(0.0, seconds) * 1e6)

        return observe

    def set_versions(self, loaded: dict[str, tuple[list[str], str | None]]) -> None:
        """Replace the loaded-versions gauge: model -> (versions, default version)."""
        self.versions.clear()
        for model, (versions, default) in loaded.items():
            for version in versions:
                self.versions.labels(model, version, "true" if version == default else "false").set(1)

    def watch_queues(self, depths: Callable[[], dict[str, int]]) -> None:
        """Report `depths()` (model -> queued requests) as a gauge at scrape time."""
        self.registry.register(_QueueDepth(depths))

    def render(self) -> bytes:
        for flush in list(self._flushes):
            flush()
        return generate_latest(self.registry)


def _request_recorder(
    counts: list[Counter | Gauge], microseconds: Gauge, latency: Histogram
) -> tuple[Callable[[float | None], None], Callable[[], None]]:
    """One (model, status)'s request counting: `record(seconds)` per request, `flush()` before
    each render.

    `record` only adds to plain numbers (the event loop is the one writer); `flush` adds what
    came since the last flush to the children's values directly. The public `inc()` and
    `observe()` per request re-check labels, take a lock per value and scan the buckets in
    Python: ~10% of the event loop's time per request for a small `.mar` model. Should
    prometheus_client's internals change, the public calls are made per request instead."""
    try:
        values = [child._value.inc for child in counts]
        total = microseconds._value.inc
        latency_sum = latency._sum.inc
        buckets = [bucket.inc for bucket in latency._buckets]
        bounds = list(latency._upper_bounds)
        if len(bounds) != len(buckets) or bounds[-1] != math.inf:
            raise AttributeError("unexpected histogram buckets")
    except AttributeError:
        return _public_recorder(counts, microseconds, latency), _nothing
    # requests, microseconds, seconds, then the requests of each latency bucket
    pending: list[float] = [0, 0.0, 0.0] + [0] * len(buckets)
    applied = list(pending)
    lock = threading.Lock()  # an inference process renders on its metrics thread

    def record(seconds: float | None) -> None:
        pending[0] += 1
        if seconds is not None:
            pending[1] += seconds * 1e6
            pending[2] += seconds
            pending[3 + bisect_left(bounds, seconds)] += 1  # the first bucket with seconds <= its bound

    def flush() -> None:
        with lock:
            now = list(pending)  # requests recorded meanwhile are added by the next flush
            added = [value - before for value, before in zip(now, applied, strict=True)]
            applied[:] = now
        if added[0]:
            for inc in values:
                inc(added[0])
        if added[2]:
            total(added[1])
            latency_sum(added[2])
        for inc, count in zip(buckets, added[3:], strict=True):
            if count:
                inc(count)

    return record, flush


def _nothing() -> None:
    pass


def _public_recorder(
    counts: list[Counter | Gauge], microseconds: Gauge, latency: Histogram
) -> Callable[[float | None], None]:
    def record(seconds: float | None) -> None:
        for child in counts:
            child.inc()
        if seconds is not None:
            microseconds.inc(seconds * 1e6)
            latency.observe(seconds)

    return record


class _QueueDepth(Collector):
    def __init__(self, depths: Callable[[], dict[str, int]]) -> None:
        self._depths = depths

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> list[GaugeMetricFamily]:
        family = self._family()
        for model, depth in sorted(self._depths().items()):
            family.add_metric([model], depth)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "inferline_queue_depth", "Requests waiting for a batch, per model.", labels=["model"]
        )
