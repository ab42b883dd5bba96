"""How the warehouse (a DuckDB file) is opened, so that a stream writing it locks no one out.

DuckDB lets one process write a file, or several read it, never both. inferline keeps every
process's hold on the file short instead: a writer holds it only while it commits (a stream's
micro-batch), readers only while their query runs, and everyone takes turns through two lock
files next to the database (`<db>.gate`, `<db>.lock`; `flock`, so a killed process lets go):

- the gate is a turnstile: whoever wants the database (reader or writer) takes it, waits for
  the lock, and lets go of the gate, so a stream that commits back to back cannot starve a
  reader, nor a long line of readers a writer;
- the lock is shared by readers and exclusive to a writer;
- a writer that sees someone at the gate (or has been idle a second) checkpoints and detaches
  the file after its current commit, so a reader waits at most one commit.

Inside its turn a process ATTACHes the file to an in-memory DuckDB (1 ms, where a new
connection costs 25 ms) and DETACHes it after. Someone who takes the file without these
locks (a plain `duckdb.connect`) is waited for too: DuckDB's own lock error is retried.

Example:
    >>> with connect("warehouse.duckdb") as con:  # doctest: +SKIP
    ...     con.sql("SELECT count(*) FROM iris_stream").fetchall()
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from inferline.errors import InferlineError

log = logging.getLogger("inferline.warehouse")

WAIT_NOTICE_S = 1.0  # a wait longer than this gets its one line
FOREIGN_WAIT_S = 3.0  # how long a lock held by a process that does not take turns is retried
READ_WHILE_RUNNING = 'README "Reading the warehouse while a pipeline runs"'
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_RESERVED = {"memory", "temp", "system", "main"}


class WarehouseError(InferlineError, ValueError):
    """The warehouse file cannot be opened (not a database, no permission, gone)."""


def alias(path: str) -> str:
    """The catalog name a warehouse is attached as: its file name up to the first dot."""
    stem = os.path.basename(path).split(".")[0]
    return stem if stem and stem.lower() not in _RESERVED else "warehouse"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Waiter:
    """Backoff from 1 ms to 20 ms, and one line (once) when the wait gets long.

    With a `timeout`, the wait ends with a one-line `WarehouseError` instead (no line).
    """

    def __init__(
        self,
        path: str,
        what: str,
        *,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.what = what
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        self.delay = 0.001
        self.noticed = False

    def wait(self, reason: str, *, speak: bool = True) -> None:
        waited = self.clock() - self.started
        if self.timeout is not None and waited >= self.timeout:
            raise WarehouseError(f"{self.path}: {reason}; gave up after {self.timeout:g} s")
        if speak and self.timeout is None and not self.noticed and waited >= WAIT_NOTICE_S:
            self.noticed = True
            log.warning("waiting for %s: %s; %s resumes when it is free", self.path, reason, self.what)
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.02)


class FileLock:
    """A `flock` on `path`: shared or exclusive, waited for by polling (so waits can speak)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int | None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                try:  # a read-only folder: an existing lock file still works read-only
                    self._fd = os.open(self.path, os.O_RDONLY)
                except OSError:
                    return None
        return self._fd

    def try_acquire(self, *, shared: bool = False) -> bool:
        fd = self._open()
        if fd is None:
            return True  # nowhere to put a lock file: only DuckDB's own lock remains
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self, waiter: _Waiter, *, shared: bool = False) -> None:
        while not self.try_acquire(shared=shared):
            waiter.wait("another process is using it")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Turn:
    """One process's turn at the warehouse `path`: gate, then the shared/exclusive lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.gate = FileLock(path + ".gate")
        self.lock = FileLock(path + ".lock")
        self.held = False

    def take(self, *, write: bool, what: str, timeout: float | None = None) -> None:
        waiter = _Waiter(self.path, what, timeout=timeout)
        self.gate.acquire(waiter)
        try:
            self.lock.acquire(waiter, shared=not write)
        finally:
            self.gate.release()
        self.held = True

    def wanted(self) -> bool:
        """Someone is waiting at the gate for this turn to end."""
        if self.gate.try_acquire():
            self.gate.release()
            return False
        return True

    def give_back(self) -> None:
        if self.held:
            self.lock.release()
            self.held = False

    def close(self) -> None:
        self.give_back()
        self.gate.close()
        self.lock.close()


def attach(
    con: duckdb.DuckDBPyConnection,
    path: str,
    *,
    read_only: bool,
    what: str,
    timeout: float | None = None,
    foreign_wait: float | None = FOREIGN_WAIT_S,
) -> str:
    """ATTACH `path` to `con` as `alias(path)`.

    A process that does not take turns (a plain `duckdb.connect`) may hold DuckDB's own lock:
    that is retried for `foreign_wait` seconds (None: as long as it takes, with one line),
    then a one-line `WarehouseError` names the process.
    """
    name = alias(path)
    mode = " (READ_ONLY)" if read_only else ""
    waiter = _Waiter(path, what, timeout=timeout)
    while True:
        try:
            con.execute(f"ATTACH {_sql_string(path)} AS {_ident(name)}{mode}").fetchall()
            return name
        except duckdb.Error as exc:
            message = (str(exc).splitlines() or [type(exc).__name__])[0]
            if "Could not set lock" not in message:
                raise WarehouseError(f"{path}: cannot open DuckDB database ({message})") from None
            if foreign_wait is not None and waiter.clock() - waiter.started >= foreign_wait:
                raise WarehouseError(open_failure(path, message)) from None
            holder = _LOCK_HOLDER.search(message)
            # A bounded wait ends in its own one line; only an open-ended one says it waits.
            reason = f"PID {holder['pid']} holds it without taking turns" if holder else message
            waiter.wait(reason, speak=foreign_wait is None)


def cause(exc: BaseException) -> str:
    """The first line of a DuckDB error, down to its original error (a checkpoint's disk error)."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    return text.rpartition("Original error: ")[2] or text


def open_failure(path: str, message: str) -> str:
    """Why DuckDB cannot open `path` held by a process that does not take turns, on one line."""
    holder = _LOCK_HOLDER.search(message)
    if holder is None:
        return f"{path}: cannot open DuckDB database ({message})"
    return (
        f"{path}: in use by another process (PID {holder['pid']}, {holder['program']}); DuckDB lets "
        "no other process open a file while one has it open for writing: that process opened it "
        "without taking turns (a plain duckdb.connect, the duckdb CLI); close it and "
        f"retry, see {READ_WHILE_RUNNING}"
    )


_long_reads: Counter[str] = Counter()  # files this process reads for a whole run
_long_lock = threading.Lock()


def read_for_a_run(path: str) -> bool:
    """This process holds a read turn on `path` until its run ends (a table source)."""
    with _long_lock:
        return _long_reads[os.path.realpath(path)] > 0


_idle = threading.local()  # per thread: an in-memory DuckDB no session is using


def _instance() -> duckdb.DuckDBPyConnection:
    # A new DuckDB instance costs 25 ms quiet and 300 ms on a loaded machine (more than the
    # whole query), so short sessions reuse this thread's idle one; a nested session gets its own.
    con: duckdb.DuckDBPyConnection | None = getattr(_idle, "con", None)
    _idle.con = None
    return con if con is not None else duckdb.connect()


def _idle_again(con: duckdb.DuckDBPyConnection) -> None:
    if getattr(_idle, "con", None) is None:
        _idle.con = con
    else:
        con.close()


class Session:
    """A DuckDB connection with the warehouse attached (and `USE`d) for one turn.

    `close()` detaches the file (a writer's DETACH checkpoints it) and ends the turn.
    `long=True` marks a turn that lasts a whole run, so this process's writer to the same
    file fails at once instead of waiting for itself. `reuse=True` gives a cursor of an
    in-memory DuckDB this thread keeps between sessions (for many short reads: a dashboard,
    a poller) instead of a new instance; what is made in its `memory` catalog outlives the turn.
    """

    def __init__(
        self,
        path: str,
        *,
        read_only: bool = True,
        what: str = "this command",
        long: bool = False,
        timeout: float | None = None,
        reuse: bool = False,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.reuse = reuse
        self._db: duckdb.DuckDBPyConnection | None = None  # the instance a reused cursor is of
        self.read_only = read_only
        self.what = what
        self.long = long
        self._con: duckdb.DuckDBPyConnection | None = None
        self.turn = Turn(path)
        self.name = ""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("Session used before open()")
        return self._con

    def open(self) -> duckdb.DuckDBPyConnection:
        if self.read_only and not os.path.exists(self.path):
            raise WarehouseError(f"{self.path}: DuckDB database not found")
        parent = os.path.dirname(self.path)
        if parent and not self.read_only:
            os.makedirs(parent, exist_ok=True)
        # The in-memory DuckDB first (~25 ms), so the turn is held only for the ATTACH.
        if self.reuse:
            self._db = _instance()
            self._con = self._db.cursor()
        else:
            self._con = duckdb.connect()
        try:
            self.turn.take(write=not self.read_only, what=self.what, timeout=self.timeout)
        except BaseException:
            self.close()
            raise
        try:
            self.name = attach(
                self.con, self.path, read_only=self.read_only, what=self.what, timeout=self.timeout
            )
            self.con.execute(f"USE {_ident(self.name)}").fetchall()
        except BaseException:
            self.close()
            raise
        if self.long:
            with _long_lock:
                _long_reads[os.path.realpath(self.path)] += 1
        return self.con

    def close(self) -> None:
        if self.long and self.name:
            with _long_lock:
                _long_reads[os.path.realpath(self.path)] -= 1
        try:
            if self._con is not None:
                if self.name:
                    self._con.execute("USE memory").fetchall()
                    self._con.execute(f"DETACH {_ident(self.name)}").fetchall()
                    self.name = ""
                self._con.close()
                self._con = None
                if self._db is not None:
                    db, self._db = self._db, None
                    _idle_again(db)
        finally:
            if self._db is not None:  # a failed DETACH: this instance is not reused
                self._db.close()
                self._db = None
            self.turn.close()


@contextmanager
def connect(
    path: str, *, read_only: bool = True, timeout: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection on the warehouse at `path`, held only inside the `with` block.

    The documented way to read a warehouse a stream is writing: every committed micro-batch
    is visible, and the stream waits (at its next commit) while the block runs, so keep it
    short. `read_only=False` is a writer's turn. With `timeout` (seconds), a turn that does
    not come in time is a `WarehouseError` instead of a wait.

    Example:
        >>> with connect("warehouse.duckdb") as con:  # doctest: +SKIP
        ...     con.sql("SELECT prediction, count(*) FROM iris_stream GROUP BY 1").show()
    """
    session = Session(path, read_only=read_only, timeout=timeout, reuse=True)
    con = session.open()
    try:
        yield con
    finally:
        session.close()


def query(path: str, sql: str, *, timeout: float | None = None) -> pa.Table:
    """The rows of `sql` over the warehouse at `path`, as Arrow; the file is held only meanwhile.

    Example:
        >>> query("warehouse.duckdb", "SELECT count(*) AS n FROM iris_stream")  # doctest: +SKIP
    """
    with connect(path, timeout=timeout) as con:
        return con.sql(sql).to_arrow_table()
