"""DuckDBSink: an upsert on `key` across batches and runs."""

from __future__ import annotations

import pyarrow as pa

from inferline.io.duckdb import _dedupe_last


def test_duplicate_keys_within_a_batch_keep_the_last_row_of_each() -> None:
    batch = pa.RecordBatch.from_pydict({"key": ["a", "a", "b", "c", "a"], "v": [1, 2, 3, 4, 5]})
    assert _dedupe_last(batch, "key").to_pydict() == {"key": ["b", "c", "a"], "v": [3, 4, 5]}
