"""A stream's file sink: part files rolled into a directory, each committed before the
messages it holds are acked.

On a stream, a Parquet, JSONL or CSV sink's `path` is a directory of parts:

    out/preds.parquet/part-000001.parquet, part-000002.parquet, ...

which DuckDB (`read_parquet('out/preds.parquet/*.parquet', union_by_name = true)`), pyarrow
(`pyarrow.dataset.dataset('out/preds.parquet')`) and Spark (`spark.read.parquet(...)`) read as
one dataset. A part is written as `.part-NNNNNN.<ext>.partial` (dataset readers skip names
that start with `.` or `_`) and renamed into place once it is committed; a part never
changes after that. A new model's wider schema is simply a new part.

A part rolls (`sink.options`) at `roll_rows` rows (131,072), `roll_bytes` bytes (128 MiB) or
`roll_seconds` after its first row (10 s), whichever comes first, and when the stream ends.

Committing (`CommitJournal`, argued in DESIGN.md): the parts are closed and fsynced; then
`_inferline_commit.json` (the renames to make and the message ids the parts hold) replaces
the previous one atomically and is fsynced: that is the commit point. Then the parts are
renamed into place and the messages acked. A restart reads the journal before reading any
message: it finishes the renames and acks those ids again (acks are idempotent), then
removes every other `.partial` (never committed, so its messages were never acked and are
delivered again). So no acked message is lost and none is written twice.

One process writes a part directory at a time (`_inferline.lock`, an advisory lock the
kernel drops when the process dies).

Example:
    >>> sink = PartSink("out/preds.parquet", "parquet", options={"roll_seconds": 5})  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import IO, Any

import pyarrow as pa

from inferline.errors import SinkError, SpecError
from inferline.io.filesinks import CsvSink, FileLayout, JsonlSink, ParquetSink, _FileSink
from inferline.io.targets import OWN_EXTENSIONS, _named, check_output, identify, is_local

log = logging.getLogger("inferline.sinks")

JOURNAL = "_inferline_commit.json"
LOCK = "_inferline.lock"
_PART = re.compile(r"^\.?part-(\d+)(\.[^.]+)(\.partial)?$")
_SINKS: dict[str, type[_FileSink]] = {"parquet": ParquetSink, "jsonl": JsonlSink, "csv": CsvSink}
DEFAULT_ROLL_ROWS = 131_072
DEFAULT_ROLL_BYTES = 128 << 20
DEFAULT_ROLL_SECONDS = 10.0


def part_files(directory: str) -> list[str]:
    """The committed parts in a stream sink's directory, in the order they were written.

    Example:
        >>> part_files("out/preds.parquet")  # doctest: +SKIP
        ['out/preds.parquet/part-000001.parquet', 'out/preds.parquet/part-000002.parquet']
    """
    found = []
    for name in os.listdir(directory):
        match = _PART.match(name)
        if match and not name.startswith(".") and match.group(3) is None:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return [path for _, path in sorted(found)]


def check_part_dir(path: str, kind: str, *, setting: str = "--set sink.path={}") -> None:
    """Refuse (SinkError) a stream's part directory at `path` where that would replace a
    file, or mix parts with files that are not a stream sink's."""
    if not is_local(path):
        raise SinkError(
            f"{path}: a stream writes a file sink as local part files (a rename commits each); "
            "write to a local path, a DuckDB table or a topic"
        )
    local = path.removeprefix("file://")
    named = _named(local)
    if named is not None and named[0] != kind:
        check_output(local, kind, setting=setting)  # says what the name means and what to pass
    found = identify(local)
    if found is None:
        return
    if found != "directory":
        raise SinkError(
            f"{path} is a file (a batch run's output?); a stream writes a directory of part files "
            f"there: pass {setting.format(_other(local))} (or remove the file)"
        )
    foreign = [name for name in os.listdir(local) if not _ours(name)]
    if foreign:
        raise SinkError(
            f"{path} is a directory holding {foreign[0]!r}, not a stream sink's part files: "
            f"pass {setting.format(_other(local))}"
        )


def _other(path: str) -> str:
    stem, ext = os.path.splitext(path.rstrip("/"))
    return f"{stem}-stream{ext}"


def _ours(name: str) -> bool:
    return bool(_PART.match(name)) or name in (JOURNAL, JOURNAL + ".tmp", LOCK)


def _fsync(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CommitJournal:
    """`_inferline_commit.json` in a part directory: the last commit's renames and message ids.

    Example:
        >>> journal = CommitJournal("out/preds.parquet")  # doctest: +SKIP
        >>> journal.commit([(".part-000001.jsonl.partial", "part-000001.jsonl")], ["7"])  # doctest: +SKIP
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, JOURNAL)

    def commit(self, renames: list[tuple[str, str]], ids: list[str]) -> None:
        """Make `renames` (fsynced partial -> part) durable as one commit that holds `ids`."""
        body = {"renames": [[os.path.abspath(a), os.path.abspath(b)] for a, b in renames], "ids": ids}
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        _fsync(self.directory, directory=True)  # the commit point
        self._rename(renames)

    def recover(self) -> list[str]:
        """Finish the last commit's renames; the message ids it holds (to ack again)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as handle:
            body = json.load(handle)
        renames = [(str(a), str(b)) for a, b in body.get("renames", [])]
        missing = [b for a, b in renames if not os.path.exists(a) and not os.path.exists(b)]
        if missing:
            log.warning(
                "warning: %s: committed part %s is gone (removed by hand?)",
                self.directory,
                missing[0],
            )
        self._rename([(a, b) for a, b in renames if os.path.exists(a) and not os.path.exists(b)])
        return [str(i) for i in body.get("ids", [])]

    @staticmethod
    def _rename(renames: list[tuple[str, str]]) -> None:
        for partial, target in renames:
            os.rename(partial, target)
        for folder in sorted({os.path.dirname(target) for _, target in renames}):
            _fsync(folder or ".", directory=True)


def roll_options(options: dict[str, Any], *, where: str) -> tuple[int, int, float]:
    """`sink.options` roll_rows, roll_bytes, roll_seconds, checked."""
    values: list[float] = []
    for name, default in (
        ("roll_rows", DEFAULT_ROLL_ROWS),
        ("roll_bytes", DEFAULT_ROLL_BYTES),
        ("roll_seconds", DEFAULT_ROLL_SECONDS),
    ):
        value = options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise SpecError(
                f"{where}: sink.options.{name} is {value!r}; expected a number > 0 (default {default:,})"
            )
        values.append(value)
    return int(values[0]), int(values[1]), float(values[2])


class _PartLayout(FileLayout):
    """One sealed group of parts: each file number takes the directory's next sequence number."""

    def __init__(self, directory: str, ext: str, take: Callable[[], int]) -> None:
        super().__init__(directory)
        self.ext, self.take = ext, take
        self._names: dict[int, str] = {}

    def file(self, base: str, number: int) -> str:
        if number not in self._names:
            self._names[number] = os.path.join(self.path, f"part-{self.take():06d}{self.ext}")
        return self._names[number]

    def partial(self, target: str) -> str:
        folder, name = os.path.split(target)
        return os.path.join(folder, f".{name}.partial")

    def pattern(self) -> str:
        return os.path.join(self.path, f"*{self.ext}")


class PartSink:
    """A stream's Parquet/JSONL/CSV sink: rolled part files in the directory `path`.

    `write` and `commit` fill the open part; `due()` says when to roll; `seal()` closes and
    fsyncs it and returns its renames, which the engine commits with the messages' ids
    (`CommitJournal`) before acking them. Nothing unsealed is ever renamed into place.
    """

    def __init__(
        self,
        path: str,
        kind: str,
        *,
        options: dict[str, Any] | None = None,
        setting: str = "--set sink.path={}",
        origin: str = "<spec>",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.kind, self.setting, self.clock = path, kind, setting, clock
        self.directory = path.removeprefix("file://").rstrip("/") or "."
        self.roll_rows, self.roll_bytes, self.roll_seconds = roll_options(options or {}, where=origin)
        ext = os.path.splitext(self.directory)[1].lower()
        self.ext = ext if ext in OWN_EXTENSIONS[kind] else OWN_EXTENSIONS[kind][0]
        self.rows = 0
        self._file: _FileSink | None = None
        self._seq = 0
        self._lock: IO[str] | None = None
        self._rows = 0  # in the open (unsealed) part
        self._bytes = 0
        self._since: float | None = None

    def describe(self) -> str:
        return self.path

    def open(self) -> None:
        check_part_dir(self.path, self.kind, setting=self.setting)
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._lock = open(os.path.join(self.directory, LOCK), "a", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write ({exc})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise SinkError(
                f"{self.path} is being written by another running stream; give each stream its own "
                + self.setting.format("PATH")
            ) from None

    def clean(self) -> None:
        """Remove parts never committed (a killed run's): their messages were not acked."""
        for name in os.listdir(self.directory):
            match = _PART.match(name)
            if match and match.group(3):
                os.remove(os.path.join(self.directory, name))

    @property
    def unsealed(self) -> bool:
        """Whether rows were written since the last `seal()`."""
        return self._rows > 0

    def due(self) -> bool:
        if not self._rows or self._since is None:
            return False
        return (
            self._rows >= self.roll_rows
            or self._bytes >= self.roll_bytes
            or self.clock() - self._since >= self.roll_seconds
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._file is None:
            layout = _PartLayout(self.directory, self.ext, self._take)
            self._file = _SINKS[self.kind](self.directory, setting=self.setting, layout=layout)
            self._file.open()
        self._file.write(batch)  # a type change raises SinkSchemaError: the engine dead-letters
        if self._since is None:
            self._since = self.clock()
        self._rows += batch.num_rows
        self._bytes += batch.nbytes
        self.rows += batch.num_rows

    def _take(self) -> int:
        if not self._seq:
            names = [_PART.match(n) for n in os.listdir(self.directory)]
            self._seq = max((int(m.group(1)) for m in names if m), default=0)
        self._seq += 1
        return self._seq

    def commit(self) -> None:
        if self._file is not None:
            self._file.commit()

    def seal(self) -> list[tuple[str, str]]:
        """Close the open part(s) and fsync them: (partial, part) renames to commit."""
        file, self._file = self._file, None
        self._rows, self._bytes, self._since = 0, 0, None
        if file is None:
            return []
        renames = file.seal()
        for partial, _ in renames:
            _fsync(partial)
        return renames

    def close(self) -> None:
        """Drop what was not sealed and committed (the engine seals before a clean end)."""
        if self._file is not None:
            partials = [partial for partial, _ in self._file._files]
            try:
                self._file.seal()
            except Exception:  # noqa: BLE001 - e.g. the disk is full: the run's error says so
                pass
            self._file = None
            for partial in partials:
                try:
                    os.remove(partial)
                except OSError:
                    pass
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def abort(self) -> None:
        self.close()

    def discard(self) -> None:
        self.close()
