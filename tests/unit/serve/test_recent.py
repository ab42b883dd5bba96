"""RecentStats: per-second samples over a sliding window, on an injected clock."""

from __future__ import annotations

import numpy as np
import pytest

from inferline.serve.recent import RecentStats


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_series_totals_and_exact_percentiles() -> None:
    clock = Clock()
    recent = RecentStats(window_s=60, clock=clock)
    latencies = [0.001 * i for i in range(1, 101)]
    for i, seconds in enumerate(latencies):
        clock.now = 1000.0 + i // 34  # 34, 34 and 32 requests in seconds 1000, 1001, 1002
        recent.request("iris", 200, seconds)
    recent.request("iris", 500, None)
    recent.request("", 404, None)
    for rows in (4, 8, 12):
        recent.batch("iris", rows, 0.002)
    snap = recent.snapshot(window_s=10, rate_s=5)
    totals = snap["totals"]
    assert (totals["requests"], totals["errors"], totals["batches"], totals["batch_rows"]) == (102, 2, 3, 24)
    assert totals["batch_max"] == 12 and totals["mean_batch"] == 8.0
    ms = np.array(latencies) * 1000
    assert totals["p50_ms"] == pytest.approx(np.percentile(ms, 50), abs=1e-3)
    assert totals["p99_ms"] == pytest.approx(np.percentile(ms, 99), abs=1e-3)
    assert totals["requests_per_second"] == pytest.approx(102 / 5)
    series = snap["series"]
    assert [p["t"] for p in series] == list(range(993, 1003)) and snap["now"] == 1002
    assert [p["requests"] for p in series[-3:]] == [34, 34, 32 + 2]
    assert series[0]["requests"] == 0 and series[0]["p50_ms"] is None
    assert snap["models"]["iris"]["requests"] == 101 and snap["models"]["(unknown)"]["errors"] == 1
    assert snap["models"]["iris"]["mean_batch"] == 8.0


def test_old_seconds_fall_out_of_the_window() -> None:
    clock = Clock()
    recent = RecentStats(window_s=30, clock=clock)
    recent.request("iris", 200, 0.01)
    clock.now += 29
    recent.request("iris", 200, 0.03)
    assert recent.snapshot()["totals"]["requests"] == 2
    clock.now += 1
    recent.request("iris", 200, 0.05)
    snap = recent.snapshot()
    assert snap["totals"]["requests"] == 2 and snap["totals"]["p50_ms"] == pytest.approx(40.0)
    assert len(snap["series"]) == 30
    assert recent.snapshot(window_s=1)["totals"]["requests"] == 1
    clock.now -= 5  # a clock stepping back fills the newest second
    recent.request("iris", 200, 0.05)
    assert recent.snapshot()["series"][-1]["requests"] == 2


def test_latencies_per_second_are_bounded() -> None:
    recent = RecentStats(max_latencies=50, clock=Clock())
    for i in range(1000):
        recent.request("iris", 200, i / 1000)
    (second,) = recent._seconds
    assert len(second.models["iris"].latencies) == 50
    assert recent.snapshot()["totals"]["requests"] == 1000
    assert 0.2 < recent.snapshot()["totals"]["p50_ms"] / 1000 < 0.8  # a fair sample, not the first 50
