"""A process's writer for one warehouse file: holds it only while it has something to commit.

Every `DuckDBSink` into the same file in this process (results, dead letters, split tables)
shares one `WarehouseWriter`: one in-memory DuckDB with the file attached during a turn, a
cursor per sink. A turn starts when a sink begins a write and ends after a commit when no
sink is inside a transaction and someone waits at the gate, or after a second of no writes
(so a stream between bursts leaves the file to plain `duckdb.connect` users too). Ending a
turn DETACHes the file, which checkpoints the WAL into it: readers see a clean file.

Example:
    >>> writer = acquire("warehouse.duckdb")  # doctest: +SKIP
    >>> con = writer.cursor(); writer.begin(con)  # doctest: +SKIP
    >>> con.execute("INSERT INTO t VALUES (1)"); writer.end()  # doctest: +SKIP
    >>> release(writer)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

from inferline.io.warehouse import FOREIGN_WAIT_S, Turn, WarehouseError, attach, cause, read_for_a_run

T = TypeVar("T")
log = logging.getLogger("inferline.warehouse")

IDLE_S = 1.0  # a turn with no write for this long ends even if no one is waiting
POLL_S = 0.01  # how often an idle turn looks at the gate


class WarehouseWriter:
    """Turns at writing `path`, shared by this process's sinks into it."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.users = 0
        self.turns = 0  # how many turns this writer took (tests and benchmarks read it)
        self._db = duckdb.connect()  # in memory, no I/O: the file is attached per turn
        # A stream's output is its own: no progress bar from a long read (a big table's key hashes).
        self._db.execute("SET enable_progress_bar = false")
        self._turn = Turn(path)
        self._mutex = threading.Lock()
        self._active = 0  # sinks inside a transaction
        self._name = ""  # the attached catalog, "" between turns
        self._last = 0.0
        self._since = 0.0  # when the current turn started (after waiting for it)
        self._broken: str | None = None  # why the file was invalidated (a failed checkpoint)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one sink (its transactions are its own)."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="inferline-warehouse", daemon=True)
            self._watcher.start()
        return self._db.cursor()

    def begin(self, con: duckdb.DuckDBPyConnection, *, use: bool = True) -> None:
        """Start (or join) this process's turn; `con`'s unqualified names are the warehouse's.

        `use=False`: `con` already points at the file in this turn (a sink sharing its cursor).
        """
        with self._mutex:
            if self._broken is not None:
                raise WarehouseError(f"{self.path}: cannot checkpoint ({self._broken})")
            if not self._name:
                if read_for_a_run(self.path):
                    raise WarehouseError(
                        f"{self.path}: this run reads it (source kind table) and cannot also write it "
                        "until the run ends; write the results to another DuckDB file"
                    )
                parent = os.path.dirname(self.path)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                waited = self.clock()
                self._turn.take(write=True, what="the writer")
                self._since = self.clock()
                try:
                    # A file held by a process that does not take turns fails the run's first
                    # turn with one line; later turns of a running stream wait for it instead.
                    self._name = attach(
                        self._db,
                        self.path,
                        read_only=False,
                        what="the writer",
                        foreign_wait=FOREIGN_WAIT_S if self.turns == 0 else None,
                    )
                except BaseException:
                    self._turn.give_back()
                    raise
                self.turns += 1
                log.debug(
                    "%s: write turn %d after waiting %.1f ms, attach %.1f ms",
                    self.path,
                    self.turns,
                    1000 * (self._since - waited),
                    1000 * (self.clock() - self._since),
                )
            self._active += 1
        if use:
            con.execute(f'USE "{self._name}"').fetchall()

    def read(self, use: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`use(con)` in a read turn of this writer's DuckDB: beside other readers, not in a write turn.

        For long reads before a stream's first write (a big table's key hashes: seconds at 10M
        rows), which in a write turn would hold up every reader. The same DuckDB instance
        attaches the file read-only and detaches it after. Inside a write turn (another sink
        of this process mid-transaction) `use` runs in that turn instead.
        """
        with self._mutex:
            if self._name and self._active == 0:
                self._end_turn()
            if self._broken is not None:
                raise WarehouseError(f"{self.path}: cannot checkpoint ({self._broken})")
            if self._name:
                return self._run(self._name, use)
            self._turn.take(write=False, what="the writer")
            started = self.clock()
            try:
                name = attach(self._db, self.path, read_only=True, what="the writer")
                try:
                    return self._run(name, use)
                finally:
                    self._db.execute(f'DETACH "{name}"').fetchall()
            finally:
                self._turn.give_back()
                log.debug("%s: read turn held %.1f ms", self.path, 1000 * (self.clock() - started))

    def _run(self, name: str, use: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        con = self._db.cursor()
        try:
            con.execute(f'USE "{name}"').fetchall()
            return use(con)
        finally:
            con.close()

    def end(self) -> None:
        """A sink committed (or rolled back): hand the file over if someone waits for it."""
        with self._mutex:
            self._active -= 1
            self._last = self.clock()
            if self._active == 0 and self._name and self._turn.wanted():
                self._end_turn()

    def _end_turn(self) -> None:
        name, self._name = self._name, ""
        try:
            # CHECKPOINT first: its error names the cause ("Operation not permitted" on a file
            # made read-only); DETACH's own checkpoint error may say only that it failed.
            ending = self.clock()
            self._db.execute(f'CHECKPOINT "{name}"').fetchall()
            self._db.execute(f'DETACH "{name}"').fetchall()
            done = self.clock()
            log.debug(
                "%s: write turn %d held %.1f ms, of which checkpoint + detach %.1f ms",
                self.path,
                self.turns,
                1000 * (done - self._since),
                1000 * (done - ending),
            )
        except duckdb.Error as exc:
            # The checkpoint failed (a full disk, a read-only file): what was committed is safe
            # in the WAL, which the next opener replays, but this DuckDB has invalidated the
            # file. Close it, so its file handles go, and fail the next write with the cause.
            self._broken = cause(exc)
            with contextlib.suppress(duckdb.Error):
                self._db.close()
        finally:
            self._turn.give_back()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._mutex:
                if self._name and self._active == 0:
                    if self.clock() - self._last >= IDLE_S or self._turn.wanted():
                        self._end_turn()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._mutex:
            try:
                if self._name:
                    self._end_turn()  # a failed checkpoint here loses nothing (see _end_turn)
                if self._broken is None:
                    self._db.close()
            finally:
                self._turn.close()


_writers: dict[str, WarehouseWriter] = {}
_registry = threading.Lock()


def acquire(path: str) -> WarehouseWriter:
    """This process's writer for `path` (one per file; `release` it when done)."""
    key = os.path.realpath(path)
    with _registry:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = WarehouseWriter(path)
        writer.users += 1
        return writer


def release(writer: WarehouseWriter) -> None:
    """Done with `writer`; the last user's release ends the turn and closes it."""
    with _registry:
        writer.users -= 1
        if writer.users > 0:
            return
        _writers.pop(os.path.realpath(writer.path), None)
    writer.close()
