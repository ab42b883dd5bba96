"""The keys of a warehouse table, held by the process writing it instead of an index in the file.

A PRIMARY KEY on a text `key` made the DuckDB file 4x the size of its rows as Parquet (the
index was three quarters of it; an index on a 64-bit hash of the key is larger still). The
sink's tables have no index; the writing process keeps DuckDB's 64-bit `hash()` of every key
in memory (8 bytes a row) in a few sorted arrays, so a batch of new keys is a plain INSERT
and only a batch whose keys may already be there pays a scan of the table (a re-run, a
redelivery after a crash).

The file stays the truth: `sync` compares the table's row count with what this process
wrote and reloads the hashes when they differ (another writer took a turn in between, a
restart after SIGKILL, a rollback). Writers that only upsert change the count exactly when
they add keys, so the count tells whether the set is current.

Example:
    >>> hashes = SortedHashes()
    >>> hashes.add(np.array([7, 3], dtype=np.uint64))
    >>> hashes.contains(np.array([3, 5], dtype=np.uint64)).tolist()
    [True, False]
"""

from __future__ import annotations

import duckdb
import numpy as np


class SortedHashes:
    """A set of 64-bit hashes: sorted, disjoint arrays, each at most half the one before.

    A lookup searches O(log n) arrays and every hash is merged O(log n) times.
    """

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def contains(self, values: np.ndarray) -> np.ndarray:
        """A boolean per value: is it in the set."""
        found = np.zeros(len(values), dtype=bool)
        for level in self._levels:
            at = np.searchsorted(level, values).clip(max=len(level) - 1)
            found |= level[at] == values
        return found

    def add(self, new: np.ndarray) -> None:
        """Add hashes that are unique and not in the set yet."""
        if not len(new):
            return
        self._levels.append(new if _is_sorted(new) else np.sort(new))
        while len(self._levels) > 1 and len(self._levels[-1]) * 2 > len(self._levels[-2]):
            last = self._levels.pop()
            merged = np.concatenate([self._levels.pop(), last])
            merged.sort(kind="mergesort")
            self._levels.append(merged)


def _is_sorted(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def key_hashes(con: duckdb.DuckDBPyConnection, query: str) -> np.ndarray:
    """`query`'s one column of hashes (`SELECT hash(key) FROM ...`): sorted, each once."""
    (column,) = con.sql(query).fetchnumpy().values()
    values = np.sort(np.asarray(column, dtype=np.uint64))
    # np.unique hashes uint64s (7 s for 1M of them here); sorting and comparing takes 0.1 s.
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


class TableKeys:
    """Hashes of every key in one table, as of this process's last write to it.

    Example:
        >>> keys = TableKeys('"results"', '"key"')  # then, inside a turn: keys.sync(con)
    """

    def __init__(self, table: str, key: str) -> None:
        self.table = table  # quoted names
        self.key = key
        self.rows = -1  # rows the table has as far as this process knows; -1: not loaded
        self.loads = 0  # how many times the hashes were read from the table (tests read it)
        self._hashes = SortedHashes()

    def sync(self, con: duckdb.DuckDBPyConnection) -> None:
        """Reload the hashes if the table's row count is not the one this process left."""
        ((count,),) = con.execute(f"SELECT count(*) FROM {self.table}").fetchall()
        if count == self.rows:
            return
        self._hashes = SortedHashes()
        self._hashes.add(key_hashes(con, f"SELECT hash({self.key}) FROM {self.table}"))
        self.rows = int(count)
        self.loads += 1

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        return self._hashes.contains(hashes)

    def wrote(self, hashes: np.ndarray, new_rows: int) -> None:
        """A write added `new_rows` rows and these (unique) key hashes, some maybe known."""
        self._hashes.add(hashes[~self._hashes.contains(hashes)])
        self.rows += new_rows

    def forget(self) -> None:
        """A rollback: what was added since the last sync is not in the table; reload next time."""
        self.rows = -1
