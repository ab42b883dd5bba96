"""The dashboard's warehouse panel: row counts of a DuckDB warehouse a stream may be writing.

`inferline serve --warehouse warehouse.duckdb` adds `"warehouse"` to `/dashboard/stats` and a
table to the page; a windowed table (a `window:` sink's, with `window_start`/`window_end`) also
gets its latest 60 windows as a line per group for each aggregate, charted on the page.
Counts are read through a reader's turn (`io/warehouse.py`), at most once a second however
many pages poll, and a turn that does not come within 2 s shows as an error on the page
instead of holding up the request.

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
        last_windows: int = 60,
    ) -> None:
        self.path = path
        self.last_windows = last_windows
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.reads = 0
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._read_at = 0.0

    def snapshot(self) -> dict[str, Any]:
        """`{"path", "tables": [{"name", "rows", "windows"?}], "error"}`; blocking (run it off the
        event loop). `windows` (windowed tables only): `{"groups", "aggregates", "series":
        [{"aggregate", "group", "points": [[window start, epoch seconds], value], ...]}]}`."""
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
                windowed = {name: _windows(con, name, self.last_windows) for name in names}
        except (InferlineError, duckdb.Error) as exc:
            return {"path": self.path, "tables": [], "error": str(exc).splitlines()[0]}
        rows = dict(counts)
        tables: list[dict[str, Any]] = []
        for i, name in enumerate(names):
            table: dict[str, Any] = {"name": name, "rows": int(rows[i])}
            if windowed[name] is not None:
                table["windows"] = windowed[name]
            tables.append(table)
        return {"path": self.path, "tables": tables, "error": None}


def _windows(con: duckdb.DuckDBPyConnection, name: str, last: int) -> dict[str, Any] | None:
    """A windowed table's latest windows as lines per group (see `io/windowed.py`), else None."""
    from inferline.io.duckdb import quote
    from inferline.io.windowed import read_windowed

    table = read_windowed(con, quote(name), name, last=last)
    if table is None:
        return None
    return {
        "groups": table.groups,
        "aggregates": table.aggregates,
        "series": [{"aggregate": s.aggregate, "group": s.group, "points": s.points} for s in table.series],
    }
