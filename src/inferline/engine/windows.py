"""`window:` — fixed, sliding and session windows over the result rows, aggregated with DuckDB.

Rows are placed on event time (`time:`, else the time the engine took their batch). The
watermark is the largest event time seen minus `allowed_lateness`; a window closes (its row
is emitted) once the watermark passes its end. Whether a row is late is judged against the
watermark of the rows before it (per row, vectorised), so a file and a stream of the same
rows in the same order give the same windows whatever the batch sizes. A row whose windows
have all closed is late: it is dead-lettered (stage `late`) and counted.

Open windows are held as partial aggregates per pane and group, in memory, when every
aggregate is decomposable (`engine/window_panes.py`, `window_pane_state.py`; not for sessions),
else as the rows themselves in a DuckDB table (each row once, with the first and last window
start it still counts in); closing combines the partials (`window_pane_close.py`) or runs one
GROUP BY over the closing windows. A stream saves them in a state file committed after the
sink and before the ack, so a SIGKILL replays only unacked messages, and a replayed row whose
key the state holds is skipped.

Example:
    >>> windows = WindowOperator(spec.window, origin="spec.yaml")  # doctest: +SKIP
    >>> windows.open(None)  # doctest: +SKIP
    >>> late = windows.add(results, ingest_time=time.time())  # doctest: +SKIP
    >>> closed = windows.close()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.engine.window_pane_close import ArrowClose
from inferline.engine.window_pane_state import PaneState, pack_keys
from inferline.engine.window_sql import aggregate_query, cast_aggregates, failing_aggregate
from inferline.engine.window_times import event_times
from inferline.errors import WindowError
from inferline.io.base import DeadLetter, row_as_json
from inferline.io.duckdb import quote
from inferline.pipeline import WindowSpec

_NEVER = -(2**62)  # a watermark before any event
_ALWAYS = 2**62  # the watermark at the end of a bounded input: every window closes
_STATE = "window_rows"
_PANES = "_inferline_window_panes"  # the partials in memory, registered for a query


class WindowOperator:
    """The open windows of one pipeline: `add` rows, `close` what the watermark passed."""

    def __init__(self, spec: WindowSpec, *, origin: str = "<spec>") -> None:
        self.spec = spec
        self.origin = origin
        self.size = spec.size_us
        self.every = spec.every_us
        self.gap = spec.gap_us
        self.lateness = spec.lateness_us
        self.max_seen = _NEVER
        self.closed_until = _NEVER  # windows ending at or before this were emitted
        self.late = 0
        self._con: duckdb.DuckDBPyConnection | None = None
        self._created = False
        self._restored: pa.Array | None = None  # keys already counted before a restart
        self._cast: dict[str, str] | None = None
        self._panes: PaneState | None = None  # the open windows as partials (else as rows)
        self._durable = False
        self._seq = 0  # the last batch the panes saved
        self._pending: tuple[int, bytes] | None = None  # this batch's (last window, keys), saved by commit
        self._txn = False  # inside a transaction on the state (the rows' state is always)
        self._closes: ArrowClose | bool | None = None  # closes by Arrow (False: by query; None: not known)

    # --- state ---------------------------------------------------------------------------
    def open(self, state_path: str | None) -> None:
        """Open in memory (bounded input) or on a state file, loading what it holds."""
        # One thread: the state's statements are small, and threads only wait on one another.
        config: dict[str, str | bool | int | float | list[str]] = {
            "enable_external_access": False,
            "threads": 1,
        }
        try:
            self._con = duckdb.connect(state_path or ":memory:", config=config)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise WindowError(
                    f"{self.origin}: window.state {state_path} is in use by another process; one process "
                    "runs a windowed stream (give another pipeline its own window.state:)"
                ) from None
            raise WindowError(f"{self.origin}: window.state {state_path}: {_first_line(exc)}") from None
        con = self._con
        _run(
            con, "CREATE TABLE IF NOT EXISTS window_meta (spec VARCHAR, max_seen BIGINT, closed_until BIGINT)"
        )
        _run(con, "CREATE TABLE IF NOT EXISTS window_last_keys (key VARCHAR)")
        meta = con.execute("SELECT spec, max_seen, closed_until FROM window_meta").fetchall()
        if meta:
            spec, self.max_seen, self.closed_until = meta[0]
            if spec != self._fingerprint():
                raise WindowError(
                    f"{self.origin}: window.state {state_path} holds windows of another window: spec; "
                    "delete it to start the windows over"
                )
        else:
            _run(con, "INSERT INTO window_meta VALUES (?, ?, ?)", [self._fingerprint(), _NEVER, _NEVER])
        self._durable = state_path is not None
        # duckdb_tables(), not information_schema (~10 ms of CPU at a connection's first look).
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        restored = PaneState.restore(
            con, tables, group_by=self.spec.group_by, size=self.size, origin=self.origin
        )
        if restored is not None:
            self._panes, saved = restored
            self._panes.saving = self._durable
            self._seq, self._restored, self._created = saved.seq, saved.keys, True
            # window_meta holds the watermark only when no batch was saved since it was written.
            self.max_seen = max(self.max_seen, saved.max_seen)
            self.closed_until = max(self.closed_until, saved.closed_until)
        else:
            self._created = _STATE in tables
        if self._created and self._panes is None:
            keys = con.sql(
                f"SELECT key FROM {_STATE} UNION SELECT key FROM window_last_keys"
            ).to_arrow_table()
            self._restored = keys.column("key").combine_chunks() if keys.num_rows else None
        if self._panes is None:  # rows (or not known yet): one transaction per batch
            _run(con, "BEGIN TRANSACTION")
            self._txn = True

    def _fingerprint(self) -> str:
        spec = self.spec
        shape = [
            spec.kind,
            self.size,
            self.every,
            self.gap,
            self.lateness,
            spec.time,
            spec.group_by,
            spec.aggregates,
        ]
        text = json.dumps(shape, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("WindowOperator used before open()")
        return self._con

    def commit(self) -> None:
        """Make the open windows and the watermark durable (after the window sink committed)."""
        con = self.con
        watermark: list[object] = [self.max_seen, self.closed_until]
        if self._panes is None:
            _run(con, "UPDATE window_meta SET max_seen = ?, closed_until = ?", watermark)
            _run(con, "COMMIT")
            _run(con, "BEGIN TRANSACTION")
            return
        # Panes: the batch's keys, partials and the watermark in one row, one statement.
        if self._pending is not None:
            (last, keys), self._pending = self._pending, None
            self._seq += 1
            saved = (self._seq, last, self.max_seen, self.closed_until, keys)
            self._panes.save(*saved, in_transaction=self._txn)
        elif self._durable:
            _run(con, "UPDATE window_meta SET max_seen = ?, closed_until = ?", watermark)
        if self._txn:  # the first batch's, begun before the panes were chosen
            _run(con, "COMMIT")
            self._txn = False

    def close_state(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def open_rows(self) -> int:
        """Rows (or partial rows, with panes) held for open windows: memory is bounded by these."""
        if not self._created:
            return 0
        if self._panes is not None:
            return self._panes.rows()
        (row,) = self.con.execute(f"SELECT count(*) FROM {_STATE}").fetchall()
        return int(row[0])

    @property
    def _table(self) -> str:
        return _PANES if self._panes is not None else _STATE

    # --- adding rows ---------------------------------------------------------------------
    def add(self, results: pa.RecordBatch, *, ingest_time: float) -> list[DeadLetter]:
        """Place a batch of result rows in their windows; late rows come back as dead letters."""
        if results.num_rows == 0:
            return []
        missing = [g for g in self.spec.group_by if g not in results.schema.names]
        if missing:
            raise WindowError(
                f"{self.origin}: window.group_by: column {missing[0]!r} not found in the result rows "
                f"(columns: {', '.join(results.schema.names)})"
            )
        keys = results.column("key").cast(pa.string())
        if self._restored is not None:
            # A message replayed after a restart that the saved windows already count.
            fresh = pc.invert(pc.is_in(keys, value_set=self._restored))
            results = results.filter(fresh)
            keys = keys.filter(fresh)
            if results.num_rows == 0:
                return []
        times = self._event_times(results, ingest_time)
        before = np.maximum.accumulate(np.concatenate(([self.max_seen], times)))[:-1]
        watermark = before - self.lateness
        if self.spec.kind == "session":
            first = last = times
            on_time = times + self.gap > watermark
        else:
            last = np.floor_divide(times, self.every) * self.every
            possible = (np.floor_divide(times - self.size, self.every) + 1) * self.every
            still_open = (np.floor_divide(watermark - self.size, self.every) + 1) * self.every
            first = np.maximum(possible, still_open)
            on_time = first <= last
        self.max_seen = max(self.max_seen, int(times.max()))
        late = self._late_letters(results, times, watermark, on_time)
        if late:  # else every row is kept: no copy
            mask = pa.array(on_time)
            results, kept, times, first, last = (
                results.filter(mask),
                keys.filter(mask),
                times[on_time],
                first[on_time],
                last[on_time],
            )
        else:
            kept = keys
        rows = results.drop_columns(["key"])
        table = pa.table(
            {
                "key": kept,
                "__t": pa.array(times, pa.int64()),
                "__first": pa.array(first, pa.int64()),
                "__last": pa.array(last, pa.int64()),
                **{name: rows.column(name) for name in rows.schema.names if not name.startswith("__")},
            }
        )
        if not self._created and self._panes is None and self.spec.kind != "session":
            group_by = self.spec.group_by
            self._panes = PaneState.choose(
                self.con, table, self.spec.aggregates, group_by=group_by, origin=self.origin
            )
            if self._panes is not None:
                self._panes.saving = self._durable
        if self._panes is not None:
            self._panes.add(table)
            self._created = True
            if self._durable:  # a replay after a SIGKILL skips the rows these panes count
                self._pending = (int(last.max(initial=_NEVER)), pack_keys(keys))
        else:
            self._insert(table, keys)
        return late

    def _event_times(self, results: pa.RecordBatch, ingest_time: float) -> np.ndarray:
        return event_times(results, self.spec.time, ingest_time=ingest_time, con=self.con, origin=self.origin)

    def _late_letters(
        self, results: pa.RecordBatch, times: np.ndarray, watermark: np.ndarray, on_time: np.ndarray
    ) -> list[DeadLetter]:
        late = np.flatnonzero(~on_time)
        self.late += len(late)
        return [
            DeadLetter(
                str(results.column("key")[i].as_py()),
                row_as_json(results, int(i)),
                f"event time {_iso(int(times[i]))} is too late: the watermark was {_iso(int(watermark[i]))} "
                f"(allowed_lateness {self.spec.allowed_lateness}) and its windows had closed",
                "late",
            )
            for i in late
        ]

    def _insert(self, table: pa.Table, keys: pa.Array) -> None:
        con = self.con
        con.register("_inferline_window_batch", table)
        try:
            if not self._created:
                _run(con, f"CREATE TABLE {_STATE} AS SELECT * FROM _inferline_window_batch")
                self._created = True
            else:
                _run(con, f"INSERT INTO {_STATE} BY NAME SELECT * FROM _inferline_window_batch")
        except duckdb.Error as exc:
            raise WindowError(f"{self.origin}: window: could not keep the rows: {_first_line(exc)}") from None
        finally:
            with contextlib.suppress(duckdb.Error):  # a failed statement aborted the transaction
                con.unregister("_inferline_window_batch")
        _run(con, "DELETE FROM window_last_keys")
        con.register("_inferline_keys", pa.table({"key": keys}))
        _run(con, "INSERT INTO window_last_keys SELECT key FROM _inferline_keys")
        con.unregister("_inferline_keys")

    # --- closing -------------------------------------------------------------------------
    def close(self, *, final: bool = False) -> pa.Table | None:
        """The rows of windows the watermark passed since the last close (all at `final`)."""
        if not self._created:
            return None
        until = _ALWAYS if final else self.max_seen - self.lateness
        if until <= self.closed_until:
            return None
        if not self._may_close(until):
            # Most batches close nothing: skip the queries (a window end or session end is due).
            self.closed_until = until
            return None
        if self.spec.kind == "session":
            closed = self._sessions(f"__end <= {until}")
            _run(self.con, f"CREATE OR REPLACE TEMP TABLE _keep AS {self._session_rows(f'__end > {until}')}")
            _run(self.con, f"DELETE FROM {_STATE}")
            _run(self.con, f"INSERT INTO {_STATE} BY NAME SELECT * FROM _keep")
            _run(self.con, "DROP TABLE _keep")
        elif self._panes is not None:
            closed = self._pane_windows(self._panes, self.closed_until, until)
            self._panes.drop_closed(until, self.size)
        else:
            closed = self._windows(self.closed_until, until)
            _run(self.con, f"DELETE FROM {_STATE} WHERE __last + {self.size} <= {until}")
        self.closed_until = until
        return closed if closed.num_rows else None

    def _may_close(self, until: int) -> bool:
        if self.spec.kind == "session":
            ((first,),) = self.con.execute(f"SELECT min(__t) FROM {_STATE}").fetchall()
            return first is not None and int(first) + self.gap <= until
        # The first window end after the last close: (k * every + size) > closed_until.
        next_end = ((self.closed_until - self.size) // self.every + 1) * self.every + self.size
        return next_end <= until

    def early(self) -> pa.Table | None:
        """Results so far of the windows still open (upserted again when they close)."""
        if not self._created or self.spec.kind == "session":
            return None
        if self._panes is not None:
            table = self._pane_windows(self._panes, self.closed_until, _ALWAYS)
        else:
            table = self._windows(self.closed_until, _ALWAYS)
        return table if table.num_rows else None

    def _pane_windows(self, panes: PaneState, after: int, until: int) -> pa.Table:
        """The windows ending in (after, until] from the partials in memory: by Arrow once its
        first close gave the query's types, else by the query over the registered partials."""
        table = panes.table()
        if table.num_rows == 0:
            return table
        extent = {"after": after, "until": until, "size": self.size, "every": self.every}
        if isinstance(self._closes, ArrowClose):
            return self._closes.windows(table, **extent)
        self.con.register(_PANES, table)
        try:
            rows = self._windows(after, until)
        finally:
            self.con.unregister(_PANES)
        if self._closes is None and rows.num_rows:
            fast = ArrowClose.for_plan(panes.plan, table.schema, group_by=self.spec.group_by)
            same = fast is not None and bool(panes.arrow)
            if fast is None or not same or not fast.windows(table, **extent).schema.equals(rows.schema):
                fast = None  # the query's types differ (an integer sum widens in DuckDB)
            self._closes = fast or False
        return rows

    def _windows(self, after: int, until: int) -> pa.Table:
        # Only the starts of the windows ending in (after, until] are expanded: a row counts in
        # each aligned start from __first to __last, clipped to [lo, hi] (closing one window
        # expands each row once, not once per window it is in).
        lo = ((after - self.size) // self.every + 1) * self.every
        hi = ((until - self.size) // self.every) * self.every
        inner = (
            f"SELECT *, unnest(generate_series(greatest(__first, {lo}::BIGINT), least(__last, {hi}::BIGINT), "
            f"{self.every}::BIGINT)) AS __ws FROM {self._table} "
            f"WHERE __first <= {hi} AND __last >= {lo}"
        )
        where = f"__ws + {self.size} > {after} AND __ws + {self.size} <= {until}"
        return self._aggregate(f"({inner})", where, "__ws", f"__ws + {self.size}")

    def _session_rows(self, where: str, *, labelled: bool = False) -> str:
        """State rows with their session's `__start`/`__end` (kept when `labelled`)."""
        groups = self._partition()
        starts = (
            f"SELECT *, CASE WHEN __t - lag(__t) OVER (PARTITION BY {groups} ORDER BY __t, key) < {self.gap} "
            f"THEN 0 ELSE 1 END AS __new FROM {_STATE}"
        )
        ids = (
            f"SELECT *, sum(__new) OVER (PARTITION BY {groups} ORDER BY __t, key ROWS UNBOUNDED PRECEDING) "
            f"AS __sid FROM ({starts})"
        )
        ends = (
            f"SELECT *, min(__t) OVER (PARTITION BY {groups}, __sid) AS __start, "
            f"max(__t) OVER (PARTITION BY {groups}, __sid) + {self.gap} AS __end FROM ({ids})"
        )
        columns = "*" if labelled else "* EXCLUDE (__new, __sid, __start, __end)"
        return f"SELECT {columns} FROM ({ends}) WHERE {where}"

    def _sessions(self, where: str) -> pa.Table:
        return self._aggregate(f"({self._session_rows(where, labelled=True)})", "true", "__start", "__end")

    def _partition(self) -> str:
        return ", ".join(quote(g) for g in self.spec.group_by) or "true"

    def _aggregate(self, rows: str, where: str, start: str, end: str) -> pa.Table:
        groups = self.spec.group_by
        query = aggregate_query(
            rows, where=where, start=start, end=end, group_by=groups, aggregates=self._aggregates()
        )
        try:
            return self.con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            raise WindowError(self._explain(exc)) from None

    def _aggregates(self) -> dict[str, str]:
        """The aggregates as run: conditions given to numeric aggregates cast to INTEGER;
        with panes, over the partial rows."""
        if self._panes is not None:
            return self._panes.plan.finals
        if self._cast is None:
            booleans = self.con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = ? AND data_type = 'BOOLEAN'",
                [_STATE],
            ).fetchall()
            self._cast = cast_aggregates(self.spec.aggregates, {name for (name,) in booleans})
        return self._cast

    def _explain(self, exc: duckdb.Error) -> str:
        return failing_aggregate(
            self.con, self._table, self.spec.aggregates, self._aggregates(), self.origin, exc
        )


def default_state_path(spec_name: str) -> str:
    """Where a stream's open windows are kept unless `window.state:` says."""
    cleaned = "".join(c if c.isalnum() else "_" for c in spec_name).strip("_") or "pipeline"
    return os.path.join(".", f"{cleaned}_window_state.duckdb")


def _run(con: duckdb.DuckDBPyConnection, query: str, params: list[object] | None = None) -> None:
    # DuckDB >= 2.0 wants every result finished before the next statement.
    con.execute(query, params).fetchall()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _iso(micros: int) -> str:
    if micros <= _NEVER // 2:
        return "(none yet)"
    return str(np.datetime64(micros, "us")) + "Z"
