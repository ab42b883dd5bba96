"""The last few minutes of a server, one sample per second, for the dashboard.

Prometheus histograms answer "since start" with bucketed latencies; the dashboard wants
"the last minutes" with exact p50/p99. `RecentStats` keeps a ring of per-second buckets
(requests, errors, latencies, batch sizes per model), drops buckets older than its window
and answers `snapshot()` with series and window totals. Each second keeps at most
`max_latencies` latencies per model (uniform reservoir), so memory is bounded under load.

Example:
    >>> recent = RecentStats(clock=lambda: 100.0)
    >>> recent.request("iris", 200, 0.004)
    >>> recent.snapshot()["totals"]["requests"]
    1
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _ModelSecond:
    requests: int = 0
    errors: int = 0
    seen: int = 0
    latencies: list[float] = field(default_factory=list)
    batches: int = 0
    batch_rows: int = 0
    batch_max: int = 0


@dataclass
class _Second:
    at: int
    models: dict[str, _ModelSecond] = field(default_factory=dict)

    def model(self, name: str) -> _ModelSecond:
        found = self.models.get(name)
        if found is None:
            found = self.models[name] = _ModelSecond()
        return found


class RecentStats:
    """Per-second samples of requests, latency and batch sizes over the last `window_s` seconds.

    Thread-safe: batch observations may come from worker threads.
    """

    def __init__(
        self,
        *,
        window_s: int = 300,
        max_latencies: int = 1024,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.window_s = window_s
        self.max_latencies = max_latencies
        self.clock = clock
        self._seconds: deque[_Second] = deque()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def _current(self) -> _Second:
        now = int(self.clock())
        seconds = self._seconds
        # A clock stepping back (NTP) keeps filling the newest second: order is never broken.
        if not seconds or seconds[-1].at < now:
            seconds.append(_Second(now))
        while seconds and seconds[0].at <= now - self.window_s:
            seconds.popleft()
        return seconds[-1]

    def request(self, model: str, status: int, seconds: float | None) -> None:
        """Count one request; `seconds` (its latency) is kept for successful ones."""
        with self._lock:
            sample = self._current().model(model or "(unknown)")
            sample.requests += 1
            if status >= 400:
                sample.errors += 1
            if seconds is not None:
                sample.seen += 1
                if len(sample.latencies) < self.max_latencies:
                    sample.latencies.append(seconds)
                else:
                    slot = self._random.randrange(sample.seen)
                    if slot < self.max_latencies:
                        sample.latencies[slot] = seconds

    def batch(self, model: str, rows: int, seconds: float) -> None:
        """Count one model call of `rows` rows."""
        with self._lock:
            sample = self._current().model(model)
            sample.batches += 1
            sample.batch_rows += rows
            sample.batch_max = max(sample.batch_max, rows)

    def snapshot(self, *, window_s: int | None = None, rate_s: int = 10) -> dict[str, Any]:
        """Series (one point per second, oldest first, gaps filled with zeros) and totals.

        `totals.requests_per_second` is the rate over the last `rate_s` seconds; latency
        percentiles and batch sizes are over the whole window. Latencies are milliseconds.
        """
        window = min(window_s or self.window_s, self.window_s)
        with self._lock:
            now = int(self.clock())
            if self._seconds:
                now = max(now, self._seconds[-1].at)
            by_second = {s.at: s for s in self._seconds if s.at > now - window}
            series = []
            all_latencies: list[float] = []
            per_model: dict[str, dict[str, Any]] = {}
            totals = {"requests": 0, "errors": 0, "batches": 0, "batch_rows": 0, "batch_max": 0}
            recent_requests = 0
            for at in range(now - window + 1, now + 1):
                second = by_second.get(at)
                point = _point(at, second)
                series.append(point)
                if second is None:
                    continue
                if at > now - rate_s:
                    recent_requests += point["requests"]
                for name, sample in second.models.items():
                    model = per_model.setdefault(
                        name,
                        {"requests": 0, "errors": 0, "batches": 0, "batch_rows": 0, "latencies": []},
                    )
                    model["requests"] += sample.requests
                    model["errors"] += sample.errors
                    model["batches"] += sample.batches
                    model["batch_rows"] += sample.batch_rows
                    model["latencies"].extend(sample.latencies)
                    all_latencies.extend(sample.latencies)
                    totals["batch_max"] = max(totals["batch_max"], sample.batch_max)
                for key in ("requests", "errors", "batches", "batch_rows"):
                    totals[key] += point[key]
        p50, p99 = _percentiles(all_latencies)
        models = {}
        for name, model in sorted(per_model.items()):
            m50, m99 = _percentiles(model.pop("latencies"))
            model.update(
                p50_ms=m50, p99_ms=m99, mean_batch=_mean_batch(model["batches"], model["batch_rows"])
            )
            models[name] = model
        return {
            "now": now,
            "window_s": window,
            "rate_s": rate_s,
            "series": series,
            "models": models,
            "totals": {
                **totals,
                "requests_per_second": round(recent_requests / rate_s, 3),
                "p50_ms": p50,
                "p99_ms": p99,
                "mean_batch": _mean_batch(totals["batches"], totals["batch_rows"]),
            },
        }


def _point(at: int, second: _Second | None) -> dict[str, Any]:
    point: dict[str, Any] = {"t": at, "requests": 0, "errors": 0, "batches": 0, "batch_rows": 0}
    latencies: list[float] = []
    batch_max = 0
    if second is not None:
        for sample in second.models.values():
            point["requests"] += sample.requests
            point["errors"] += sample.errors
            point["batches"] += sample.batches
            point["batch_rows"] += sample.batch_rows
            batch_max = max(batch_max, sample.batch_max)
            latencies.extend(sample.latencies)
    point["p50_ms"], point["p99_ms"] = _percentiles(latencies)
    point["mean_batch"] = _mean_batch(point["batches"], point["batch_rows"])
    point["batch_max"] = batch_max
    return point


def _percentiles(latencies: list[float]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    p50, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 99])
    return _round(float(p50)), _round(float(p99))


def _round(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else 0.0


def _mean_batch(batches: int, rows: int) -> float | None:
    return round(rows / batches, 3) if batches else None
