"""Pane partials of the open windows, held in memory and saved with each committed batch.

The partial rows (`engine/window_panes.py`) live in this process as Arrow tables: a batch adds
its few rows without a query, a close reads them (`engine/window_pane_close.py`). The state
file gets one row per committed batch in `window_pane_keys`: its message keys and its partial
rows (Arrow IPC), the last window start it counts in and the watermark after it. That is one
statement per batch (two when windows closed: the rows of batches whose windows all ended
go in the same transaction), committed after the window sink and before the ack. A restart
reads the rows back: their partials, less those of closed windows, are the open panes, and
their keys are the messages a replay must not count again.

Example:
    >>> state = PaneState.choose(con, table, aggregates, group_by=["cls"], origin="s")  # doctest: +SKIP
    >>> state.add(table)  # doctest: +SKIP
    >>> state.save(1, last, max_seen, closed_until, pack(pa.table({"key": keys})))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc

from inferline.engine.window_panes import (
    PanePlan,
    arrow_fits,
    arrow_partials,
    merge_query,
    pane_plan,
    partial_query,
    same_types,
)
from inferline.engine.window_sql import cast_aggregates
from inferline.errors import WindowError

KEYS = "window_pane_keys"  # per committed batch: its keys and partials, for a restart
PLAN = "window_pane_plan"  # the aggregates as run, so a restart rebuilds the same plan
OLD_PANES = "window_panes"  # partials kept in a table of their own (state files before 2026-12-01 21:00)
_BATCH = "_inferline_window_batch"
_MERGE_AFTER = 1_000  # partial rows added since the last merge (tiny batches add one each)
_COLUMNS = "seq BIGINT, last BIGINT, max_seen BIGINT, closed_until BIGINT, keys BLOB, partials BLOB"


def pack(table: pa.Table) -> bytes:
    """A table as one value (Arrow IPC), saved in one row per batch."""
    out = io.BytesIO()
    with ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)
    return out.getvalue()


def unpack(blobs: Sequence[bytes]) -> list[pa.Table]:
    return [ipc.open_stream(blob).read_all() for blob in blobs]


def pack_keys(keys: pa.Array) -> bytes:
    return pack(pa.table({"key": keys}))


@dataclass(frozen=True)
class Saved:
    """What a state file's panes held: the last batch, the watermark, the keys counted."""

    seq: int
    max_seen: int
    closed_until: int
    keys: pa.Array | None


class PaneState:
    """Open windows as partial rows in memory; one saved row per committed batch.

    Example:
        >>> state = PaneState.choose(con, table, aggregates, group_by=["cls"], origin="s")  # doctest: +SKIP
        >>> state.add(table)  # doctest: +SKIP
        >>> state.save(1, last, max_seen, closed_until, keys_blob)  # doctest: +SKIP
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        plan: PanePlan,
        run: dict[str, str],
        *,
        group_by: Sequence[str],
        origin: str,
        created: bool,
    ) -> None:
        self.con = con
        self.plan = plan
        self.run = run  # the aggregates as run over rows (conditions cast)
        self.group_by = list(group_by)
        self.origin = origin
        self.created = created  # the state file has the plan and batch tables
        self.arrow: bool | None = None  # partials by Arrow's group_by; None: not known yet
        self.saving = False  # a state file gets each batch's partials (`save`)
        self._pieces: list[pa.Table] = []  # the open partial rows, merged now and then
        self._rows = 0
        self._unmerged = 0
        self._added: list[pa.Table] = []  # this batch's partial rows, saved by `save`
        self._drop: tuple[int, int] | None = None  # (until, size): batch rows to forget at `save`

    @classmethod
    def choose(
        cls,
        con: duckdb.DuckDBPyConnection,
        table: pa.Table,
        aggregates: Mapping[str, str],
        *,
        group_by: Sequence[str],
        origin: str,
    ) -> PaneState | None:
        """Panes for these aggregates over rows like `table`, or None when they need the rows:
        one is not decomposable, or the partials would not give the type the rows give."""
        run = cast_aggregates(aggregates, {f.name for f in table.schema if pa.types.is_boolean(f.type)})
        plan = pane_plan(run, group_by=group_by)
        if plan is None:
            return None
        con.register(_BATCH, table)
        try:
            if not same_types(con, _BATCH, plan, run, group_by):
                return None
            state = cls(con, plan, run, group_by=group_by, origin=origin, created=False)
            state.arrow = arrow_fits(con, table, _BATCH, plan, group_by)
            return state
        finally:
            con.unregister(_BATCH)

    @classmethod
    def restore(
        cls,
        con: duckdb.DuckDBPyConnection,
        tables: Set[str],
        *,
        group_by: Sequence[str],
        size: int,
        origin: str,
    ) -> tuple[PaneState, Saved] | None:
        """The panes a state file (holding `tables`) holds, or None when it holds none."""
        if not tables & {KEYS, PLAN, OLD_PANES}:
            return None
        try:
            if OLD_PANES in tables:
                _move_old_panes(con)
            ((text,),) = con.execute(f"SELECT aggregates FROM {PLAN}").fetchall()
            rows = con.execute(f"SELECT seq, max_seen, closed_until, keys, partials FROM {KEYS}").fetchall()
            plan = pane_plan(json.loads(text), group_by=group_by)
            if plan is None:
                raise ValueError("not a plan of partial aggregates")
            # The watermark only grows: the newest batch's is the largest.
            saved = Saved(
                max((int(r[0]) for r in rows), default=0),
                max((int(r[1]) for r in rows), default=-(2**62)),
                max((int(r[2]) for r in rows), default=-(2**62)),
                _keys([bytes(r[3]) for r in rows]),
            )
            state = cls(con, plan, json.loads(text), group_by=group_by, origin=origin, created=True)
            state.saving = True
            pieces = unpack([bytes(r[4]) for r in rows if r[4] is not None])
        except (duckdb.Error, pa.ArrowException, ValueError) as exc:
            raise WindowError(
                f"{origin}: window.state: its panes cannot be read ({_first_line(exc)}); "
                "delete it to start the windows over"
            ) from None
        if pieces:
            state._keep(pa.concat_tables(pieces, promote_options="permissive"))
            state.drop_closed(saved.closed_until, size)
            state._drop = None  # the saved rows already are what is left
        return state, saved

    # --- in memory -------------------------------------------------------------------
    def add(self, table: pa.Table) -> None:
        """The partial rows of a batch of placed rows (`__first`, `__last`, groups, columns)."""
        con = self.con
        if self.arrow is None:  # reopened: this batch shows the column types
            con.register(_BATCH, table)
            try:
                self.arrow = arrow_fits(con, table, _BATCH, self.plan, self.group_by)
            finally:
                con.unregister(_BATCH)
        if self.arrow:
            partials = arrow_partials(table, self.plan, self.group_by)
        else:
            partials = self._query(table, partial_query(_BATCH, self.plan, self.group_by))
        if self.saving:
            self._added.append(partials)
        self._keep(partials)
        self._unmerged += partials.num_rows
        if self._unmerged > _MERGE_AFTER:
            self.merge()

    def _keep(self, partials: pa.Table) -> None:
        self._pieces.append(partials)
        self._rows += partials.num_rows

    def _query(self, table: pa.Table, query: str) -> pa.Table:
        self.con.register(_BATCH, table)
        try:
            return self.con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            raise WindowError(
                f"{self.origin}: window: could not keep the partials: {_first_line(exc)}"
            ) from None
        finally:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(_BATCH)

    def table(self) -> pa.Table:
        """The open partial rows as one table."""
        if len(self._pieces) > 1:
            self._pieces = [pa.concat_tables(self._pieces, promote_options="permissive").combine_chunks()]
        return self._pieces[0] if self._pieces else pa.table({})

    def rows(self) -> int:
        return self._rows

    def merge(self) -> None:
        """The partial rows of each (first, last, group) combined into one."""
        if self._pieces:
            merged = self._query(self.table(), merge_query(_BATCH, self.plan, self.group_by))
            self._pieces, self._rows = [merged], merged.num_rows
        self._unmerged = 0

    def drop_closed(self, until: int, size: int) -> None:
        """Forget panes whose windows all ended by `until` (and, at `save`, their batches' rows)."""
        self._drop = (until, size)
        if not self._pieces:
            return
        table = self.table()
        last = table.column("__last").to_numpy()
        kept = table.filter(pa.array(last + size > until))
        self._pieces, self._rows = [kept], kept.num_rows

    # --- the state file ----------------------------------------------------------------
    def save(
        self, seq: int, last: int, max_seen: int, closed_until: int, keys: bytes, *, in_transaction: bool
    ) -> None:
        """One committed batch: its last window start, the watermark after it, its keys and
        partials; with the rows of batches whose windows all closed, in one transaction."""
        added, self._added = self._added, []
        partials = pack(pa.concat_tables(added, promote_options="permissive")) if added else None
        record: list[object] = [seq, last, max_seen, closed_until, keys, partials]
        insert = f"INSERT INTO {KEYS} VALUES (?, ?, ?, ?, ?, ?)"
        con = self.con
        if not self.created:
            con.execute(f"CREATE TABLE {PLAN} AS SELECT ? AS aggregates", [json.dumps(self.run)]).fetchall()
            con.execute(f"CREATE TABLE {KEYS} ({_COLUMNS})").fetchall()
            self.created = True
        if self._drop is None:
            con.execute(insert, record).fetchall()  # on its own: one statement, one commit
            return
        (until, size), self._drop = self._drop, None
        # The batch being saved writes its row after the delete: the newest row always stays.
        delete = f"DELETE FROM {KEYS} WHERE last + {size} <= {until}"
        if in_transaction:
            con.execute(f"{delete}; {insert}", record).fetchall()
        else:
            con.execute(f"BEGIN TRANSACTION; {delete}; {insert}", record).fetchall()
            con.execute("COMMIT").fetchall()


def _keys(blobs: Sequence[bytes]) -> pa.Array | None:
    chunks = [chunk for table in unpack(blobs) for chunk in table.column("key").chunks]
    return pa.chunked_array(chunks, pa.string()).combine_chunks() if chunks else None


def _move_old_panes(con: duckdb.DuckDBPyConnection) -> None:
    """A state file whose partials are a table of their own: they become one saved row."""
    con.execute("BEGIN TRANSACTION").fetchall()
    con.execute(f"ALTER TABLE {KEYS} ADD COLUMN IF NOT EXISTS partials BLOB").fetchall()
    panes = con.sql(f"SELECT * FROM {OLD_PANES}").to_arrow_table()
    ((seq, max_seen, closed_until),) = con.execute(
        f"SELECT coalesce(max(seq), 0), coalesce(max(max_seen), {-(2**62)}), "
        f"coalesce(max(closed_until), {-(2**62)}) FROM {KEYS}"
    ).fetchall()
    if panes.num_rows:
        last = max(panes.column("__last").to_pylist())
        empty = pack_keys(pa.array([], pa.string()))
        record: list[object] = [seq, last, max_seen, closed_until, empty, pack(panes)]
        con.execute(f"INSERT INTO {KEYS} VALUES (?, ?, ?, ?, ?, ?)", record).fetchall()
    con.execute(f"DROP TABLE {OLD_PANES}").fetchall()
    con.execute("COMMIT").fetchall()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
