"""The dashboard's warehouse panel: row counts of a DuckDB warehouse a stream may be writing.

`inferline serve --warehouse warehouse.duckdb` adds `"warehouse"` to `/dashboard/stats` and a
table to the page. Counts are read through a reader's turn (`io/warehouse.py`), at most once
a second however many pages poll, and a turn that does not come within 2 s shows as an error
on the page instead of holding up the request.

Example:
    >>> counts = WarehouseCounts("warehouse.duckdb")
    >>> counts.snapshot()["path"]  # doctest: +SKIP
    'warehouse.duckdb'
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb

from inferline.errors import InferlineError

TABLES_SQL = (
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_catalog = current_database() AND table_type = 'BASE TABLE' ORDER BY 1, 2"
)


class WarehouseCounts:
    """Rows per table of the warehouse at `path`, re-read at most every `every_s` seconds."""

    def __init__(
        self,
        path: str,
        *,
        every_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.reads = 0
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._read_at = 0.0

    def snapshot(self) -> dict[str, Any]:
        """`{"path", "tables": [{"name", "rows"}], "error"}`; blocking (run it off the event loop)."""
        with self._lock:
            if self._last is None or self.clock() - self._read_at >= self.every_s:
                self._last = self._read()
                self._read_at = self.clock()
            return self._last

    def _read(self) -> dict[str, Any]:
        from inferline.io.duckdb import quote
        from inferline.io.warehouse import connect

        self.reads += 1
        if not os.path.exists(self.path):
            return {"path": self.path, "tables": [], "error": "not created yet"}
        try:
            with connect(self.path, timeout=self.timeout_s) as con:
                names = [t if s == "main" else f"{s}.{t}" for s, t in con.execute(TABLES_SQL).fetchall()]
                counts = (
                    con.execute(
                        " UNION ALL ".join(
                            f"SELECT {i}, count(*) FROM {quote(n)}" for i, n in enumerate(names)
                        )
                    ).fetchall()
                    if names
                    else []
                )
        except (InferlineError, duckdb.Error) as exc:
            return {"path": self.path, "tables": [], "error": str(exc).splitlines()[0]}
        rows = dict(counts)
        tables = [{"name": name, "rows": int(rows[i])} for i, name in enumerate(names)]
        return {"path": self.path, "tables": tables, "error": None}
