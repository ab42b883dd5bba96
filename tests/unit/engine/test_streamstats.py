"""Stream statistics: interval reports and run percentiles."""

from __future__ import annotations

import numpy as np

from inferline.engine.streamstats import LatencyTracker, StreamStats


def test_interval_and_run_percentiles() -> None:
    tracker = LatencyTracker()
    tracker.record(np.linspace(0.0, 0.1, 101), 101)
    stats = tracker.interval(0.5, backlog=12)
    assert stats.messages == 101 and round(stats.rate) == 202
    assert stats.p50_ms is not None and abs(stats.p50_ms - 50.0) < 1e-6
    assert stats.line() == "stats: 202 msg/s, latency p50 50 ms p99 99 ms, backlog 12"
    empty = tracker.interval(1.0, backlog=None)
    assert empty.line() == "stats: 0 msg/s, latency -, backlog -"
    p50, p99 = tracker.run_percentiles()
    assert p50 is not None and p99 is not None and abs(p99 - 99.0) < 1e-6


def test_run_samples_stay_bounded() -> None:
    tracker = LatencyTracker()
    for _ in range(30):
        tracker.record(np.full(10_000, 0.02), 10_000)
        tracker.interval(1.0, None)
    p50, _ = tracker.run_percentiles()
    assert p50 is not None and abs(p50 - 20.0) < 1e-6
    assert StreamStats(0, 0.0, None, None, 0).rate == 0.0
