"""`Backoff`: capped exponential delays, for every loop that waits before trying again.

A broker that is away (`io/topics/reconnect.py`), a queue file another process holds
(`io/topics/embedded.py`) and a model version that does not load (`models/watch.py`) all
retry on the same schedule: `first`, doubling, never more than `cap`.

Example:
    >>> backoff = Backoff(0.1, 5.0)
    >>> [backoff.delay(attempt) for attempt in (1, 2, 3, 9)]
    [0.1, 0.2, 0.4, 5.0]
    >>> delays = backoff.delays()
    >>> next(delays), next(delays)
    (0.1, 0.2)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# 2**64 doublings are past any cap a float can tell apart; more would overflow.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class Backoff:
    """Delays `first`, `2 * first`, `4 * first`, ... capped at `cap` seconds."""

    first: float
    cap: float

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"backoff: expected 0 < first <= cap, got first={self.first}, cap={self.cap}")

    def delay(self, attempt: int) -> float:
        """The wait after the `attempt`-th failure (1 for the first)."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        return min(self.first * 2.0**doublings, self.cap)

    def delays(self) -> Iterator[float]:
        """The waits after the 1st, 2nd, ... failure, without end."""
        attempt = 1
        while True:
            yield self.delay(attempt)
            attempt += 1
