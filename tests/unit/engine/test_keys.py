"""KeyTracker counts rows whose key was already written in the run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from inferline.engine.keys import KeyTracker


def test_counts_repeats_within_and_across_batches_like_a_set() -> None:
    rng = np.random.default_rng(7)
    tracker = KeyTracker()
    seen: set[str] = set()
    expected = 0
    for _ in range(60):
        keys = [f"k{n}" for n in rng.integers(0, 20_000, size=int(rng.integers(1, 800)))]
        got = tracker.add(pa.array(keys))
        repeated = 0
        for key in keys:
            repeated += key in seen
            seen.add(key)
        assert got == repeated
        expected += repeated
    assert tracker.duplicates == expected > 0
    tracker.close()


def test_unique_keys_count_nothing_and_the_example_is_a_repeated_key() -> None:
    tracker = KeyTracker()
    assert tracker.add(pa.array([str(i) for i in range(5000)])) == 0
    assert tracker.add(pa.array(["a", "b", "c"])) == 0
    assert tracker.example is None
    assert tracker.add(pa.array(["x", "4999", "y", "x"])) == 2
    assert tracker.example == "4999"
    inside = KeyTracker()
    assert inside.add(pa.chunked_array([["p", "q"], ["q", "r"]])) == 1
    assert inside.example == "q"
