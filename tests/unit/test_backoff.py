"""`Backoff`: the one retry schedule of the broker reconnector, the queue file and the model watcher."""

from __future__ import annotations

import itertools

import pytest

from inferline.backoff import Backoff
from inferline.io.topics.reconnect import BROKER_BACKOFF
from inferline.models.watch import LOAD_BACKOFF


def test_delays_double_from_the_first_and_stop_at_the_cap() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert list(itertools.islice(backoff.delays(), 6)) == [backoff.delay(n) for n in range(1, 7)]


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    assert Backoff(0.005, 0.1).delay(10**9) == 0.1  # no OverflowError after a long outage
    assert Backoff(2.0, 3.0).delay(0) == 2.0  # an attempt before the first is the first


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_schedule_that_cannot_wait_is_refused(first: float, cap: float) -> None:
    with pytest.raises(
        ValueError, match=rf"backoff: expected 0 < first <= cap, got first={first}, cap={cap}"
    ):
        Backoff(first, cap)


def test_the_documented_schedules() -> None:
    # README: a broker outage retries 0.1 s doubling to 5 s; a model that does not load, 1 s to 30 s.
    assert (BROKER_BACKOFF.first, BROKER_BACKOFF.cap) == (0.1, 5.0)
    assert (LOAD_BACKOFF.first, LOAD_BACKOFF.cap) == (1.0, 30.0)
