"""Duplicate keys within a run: counted, so that a `key:` column that is not unique is not silent.

A table sink upserts on `key`, so rows with the same key replace each other (the last one
read wins) and `--set key=target` on iris would leave 3 rows while the summary said 150.
The engine hands every written batch's keys to a `KeyTracker`, which remembers 64-bit hashes
of the keys (8 bytes a row, no per-row Python) in a few sorted arrays merged as they grow.

Example:
    >>> tracker = KeyTracker()
    >>> tracker.add(pa.array(["a", "b", "a"]))
    1
    >>> tracker.example
    'a'
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from inferline.io.key_index import SortedHashes


class KeyTracker:
    """Counts rows whose key was already written in this run (or earlier in the same batch)."""

    def __init__(self) -> None:
        self.duplicates = 0
        self.example: str | None = None
        self._seen = SortedHashes()
        self._con: duckdb.DuckDBPyConnection | None = None

    def add(self, keys: pa.Array | pa.ChunkedArray) -> int:
        """Record `keys`; return how many of them were seen before (this batch included)."""
        if len(keys) == 0:
            return 0
        hashes = self._hash(keys)
        unique, first = np.unique(hashes, return_index=True)
        seen = self._seen.contains(unique)
        repeated = (len(hashes) - len(unique)) + int(seen.sum())
        if repeated and self.example is None:
            self.example = self._example(keys, hashes, unique[seen], first)
        self.duplicates += repeated
        self._seen.add(unique[~seen])
        return repeated

    def _hash(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if self._con is None:
            self._con = duckdb.connect()
        self._con.register("_keys", pa.table({"k": keys}))
        try:
            (column,) = self._con.sql("SELECT hash(k) AS h FROM _keys").fetchnumpy().values()
        finally:
            self._con.unregister("_keys")
        return np.asarray(column, dtype=np.uint64)

    @staticmethod
    def _example(
        keys: pa.Array | pa.ChunkedArray, hashes: np.ndarray, seen_before: np.ndarray, first: np.ndarray
    ) -> str:
        if len(seen_before):
            index = int(np.flatnonzero(np.isin(hashes, seen_before[:1]))[0])
        else:
            # A key repeated inside this batch: a row that is not its hash's first occurrence.
            later = np.ones(len(hashes), dtype=bool)
            later[first] = False
            index = int(np.flatnonzero(later)[0])
        return str(keys[index].as_py())

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
