"""Streaming statistics: messages/s, end-to-end latency (publish -> commit), backlog."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Enough samples for a stable p99, bounded so a stream that runs for days stays small.
_MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class StreamStats:
    """One `--stats-every` report.

    Example:
        >>> StreamStats(messages=500, seconds=0.5, p50_ms=12.0, p99_ms=40.0, backlog=3).line()
        'stats: 1,000 msg/s, latency p50 12 ms p99 40 ms, backlog 3'
    """

    messages: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    backlog: int | None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        latency = (
            f"latency p50 {self.p50_ms:,.0f} ms p99 {self.p99_ms:,.0f} ms"
            if self.p50_ms is not None and self.p99_ms is not None
            else "latency -"
        )
        backlog = f"{self.backlog:,}" if self.backlog is not None else "-"
        return f"stats: {self.rate:,.0f} msg/s, {latency}, backlog {backlog}"


class LatencyTracker:
    """Latency samples for the current interval and (reservoir-sampled) the whole run."""

    def __init__(self, *, seed: int = 0) -> None:
        self._interval: list[np.ndarray] = []
        self._interval_messages = 0
        self._run = np.empty(0)
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    def record(self, seconds: np.ndarray, messages: int) -> None:
        self._interval.append(seconds)
        self._interval_messages += messages
        self._seen += len(seconds)
        room = _MAX_SAMPLES - len(self._run)
        if room > 0:
            self._run = np.concatenate([self._run, seconds[:room]])
            seconds = seconds[room:]
        if len(seconds):
            # Reservoir sampling: each sample so far is kept with equal probability.
            slots = self._rng.integers(0, self._seen, size=len(seconds))
            hit = slots < _MAX_SAMPLES
            self._run[slots[hit]] = seconds[hit]

    def interval(self, seconds: float, backlog: int | None) -> StreamStats:
        """The report for the interval that just ended; starts a new one."""
        p50, p99 = _percentiles(np.concatenate(self._interval) if self._interval else np.empty(0))
        stats = StreamStats(self._interval_messages, seconds, p50, p99, backlog)
        self._interval, self._interval_messages = [], 0
        return stats

    def run_percentiles(self) -> tuple[float | None, float | None]:
        """p50 and p99 over the whole run, in milliseconds."""
        return _percentiles(self._run)


def _percentiles(samples: np.ndarray) -> tuple[float | None, float | None]:
    if not len(samples):
        return None, None
    p50, p99 = np.percentile(samples, [50, 99]) * 1000.0
    return float(p50), float(p99)
