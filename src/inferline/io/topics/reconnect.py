"""`Reconnector`: run a broker call again after connection errors, with capped backoff.

A broker restart must not end a stream. Every call to the broker goes through
`Reconnector.call`, which retries on the given connection errors with exponential backoff
(0.1 s doubling to 5 s) until the broker answers or `timeout` seconds of outage have passed.
One line is logged when the connection is lost and one when it is back, with the outage's
length, however many threads were waiting on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from inferline.backoff import Backoff
from inferline.errors import InputError

log = logging.getLogger("inferline.topics")

T = TypeVar("T")

DEFAULT_BROKER_TIMEOUT = 300.0
BROKER_BACKOFF = Backoff(0.1, 5.0)


class BrokerUnavailable(InputError):
    """The broker did not answer for `--broker-timeout` seconds; `accepted` counts what got in."""

    def __init__(self, message: str, *, accepted: int | None = None) -> None:
        super().__init__(message)
        self.accepted = accepted


class Reconnector:
    """Calls `fn()` until it succeeds, reconnecting through `errors` for up to `timeout` s.

    Example:
        >>> r = Reconnector("Redis at redis://127.0.0.1:6379/0", errors=(ConnectionError,))
        >>> r.call(lambda: 42)
        42
    """

    def __init__(
        self,
        what: str,
        *,
        errors: tuple[type[BaseException], ...],
        timeout: float = DEFAULT_BROKER_TIMEOUT,
        backoff: Backoff = BROKER_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.what = what
        self.errors = errors
        self.timeout = timeout
        self.backoff = backoff
        self.clock = clock
        self.sleep = sleep
        # Recoveries so far: consumers compare it to re-read what a lost reply delivered.
        self.recoveries = 0
        self._lost_at: float | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        delays = self.backoff.delays()
        while True:
            try:
                result = fn()
            except self.errors as exc:
                waited = self._lost(exc)
                if waited >= self.timeout:
                    raise BrokerUnavailable(
                        f"{self.what}: no connection for {waited:.0f} s ({_reason(exc)}); giving up "
                        f"(--broker-timeout {self.timeout:g})"
                    ) from None
                self.sleep(min(next(delays), max(self.timeout - waited, 0.0)))
                continue
            if self._lost_at is not None:
                self._back()
            return result

    def _lost(self, exc: BaseException) -> float:
        now = self.clock()
        with self._lock:
            if self._lost_at is None:
                self._lost_at = now
                log.warning(
                    "%s: connection lost (%s); reconnecting for up to %g s",
                    self.what,
                    _reason(exc),
                    self.timeout,
                )
            return now - self._lost_at

    def _back(self) -> None:
        with self._lock:
            if self._lost_at is None:
                return
            outage = self.clock() - self._lost_at
            self._lost_at = None
            self.recoveries += 1
        log.warning("%s: connection back after %.1f s", self.what, outage)


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]
