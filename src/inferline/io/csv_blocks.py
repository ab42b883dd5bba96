"""Reading one CSV file as Arrow batches, block by block, for `CsvSource`.

Arrow's streaming reader fixes each column's type from the file's first block. Left to
infer, it also runs its inferring converter on every later block, which is half of its parse
CPU. So the first block (the first `BLOCK` bytes up to the last whole line) is parsed on its
own, with inference, as the streaming reader would, and the rest of the file is streamed with
the types that block gave (`typed_blocks`): the same types, batches and dead letters, half
the parse CPU, and the first rows out after one block's parse. A first block that does not
parse alone (an unterminated quote, an empty file) leaves the whole file to the inferring
streaming reader (`streaming_blocks`), as before.

Example:
    >>> import io
    >>> on_invalid = InvalidRows("mem.csv")
    >>> blocks = typed_blocks(io.BytesIO(b"a,b\\n1,x\\n2,y\\n"), on_invalid, size=14)
    >>> blocks.schema.field("a").type, blocks.read_next_batch().num_rows
    (DataType(int64), 2)
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from inferline.io.base import DeadLetter

BLOCK = 1 << 20  # CSV parse block, bytes; the first block's types are the file's
REST_BLOCK = 256 << 10  # once typed, smaller blocks cost no more CPU and come out sooner


def bad_line_key(uri: str, number: int | None, text: str) -> str:
    # Arrow's multi-threaded parser does not always know the line number; the line's own
    # text then keeps the key stable across runs and distinct between bad lines.
    if number is not None:
        return f"{uri}:line{number}"
    return f"{uri}:bad-{hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:16]}"


class InvalidRows:
    """Arrow's `invalid_row_handler` for one CSV file: malformed lines become dead letters.

    A re-read from the start (input columns as text) meets the lines already reported, and
    those the parser's read-ahead reported for blocks not yet emitted: each line is reported
    once. Lines are counted by (number, text), since without a line number (the threaded
    parser) identical lines are told apart only by how many times they occur.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._invalid: list[DeadLetter] = []
        self._reported: Counter[tuple[int | None, str]] = Counter()
        self._this_pass: Counter[tuple[int | None, str]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, row: Any) -> str:
        with self._lock:
            line = (row.number, row.text)
            self._this_pass[line] += 1
            if self._this_pass[line] > self._reported[line]:
                self._reported[line] += 1
                key = bad_line_key(self.uri, row.number, row.text)
                if self._reported[line] > 1:
                    key += f"-{self._reported[line]}"
                where = f" line {row.number}" if row.number is not None else ""
                self._invalid.append(
                    DeadLetter(
                        key=key,
                        raw=row.text,
                        error=f"{self.uri}{where}: expected {row.expected_columns} columns, "
                        f"got {row.actual_columns}",
                        stage="parse",
                    )
                )
        return "skip"

    def restart(self) -> None:
        """The file is read again from its start."""
        with self._lock:
            self._this_pass.clear()

    def drain(self) -> list[DeadLetter]:
        """The dead letters reported since the last call."""
        with self._lock:
            dead, self._invalid = self._invalid, []
        return dead


def unnumbered(on_invalid: InvalidRows) -> Callable[[Any], str]:
    """`on_invalid` with the line number dropped. Arrow numbers lines only when it parses on
    one thread (`use_threads=False`, or one CPU: OMP_NUM_THREADS=1), and then from where that
    reader started, not from the file's start; without numbers a bad line's key is its text's
    hash in every pass (typed, re-read as text) and on every machine, so it is reported once.
    (Parsing on the reader's thread, not Arrow's pool, saved 5% of a run's CPU on 2 cores.)"""
    return lambda row: on_invalid(row._replace(number=None))


class CsvBlocks:
    """A CSV file's batches, each with the byte offset in the file where its rows end.

    `read_next_batch()` raises StopIteration at the end (as Arrow's reader); `end` is the
    last batch's end offset. Batches come from `head` (the first block, already parsed; it
    ends at `start`), then from `open_rest()`, a streaming reader opened once the head is
    used up, whose k-th batch ends within a line of `start + k * block` (it reads blocks of
    `block` bytes cut at the last whole line).
    """

    def __init__(
        self,
        schema: pa.Schema,
        *,
        size: int,
        head: pa.RecordBatch | None = None,
        start: int = 0,
        block: int = BLOCK,
        open_rest: Callable[[], pa_csv.CSVStreamingReader | None] | None = None,
    ) -> None:
        self.schema = schema
        self.size = size
        self.end = 0
        self._head = head
        self._start = start
        self._block = block
        self._rest: pa_csv.CSVStreamingReader | None = None
        self._open_rest = open_rest
        self._blocks = 0

    def read_next_batch(self) -> pa.RecordBatch:
        if self._head is not None:
            head, self._head = self._head, None
            self.end = min(self._start, self.size)
            return head
        if self._rest is None:
            opener, self._open_rest = self._open_rest, None
            self._rest = opener() if opener is not None else None
            if self._rest is None:
                raise StopIteration
        batch = self._rest.read_next_batch()
        self._blocks += 1
        self.end = min(self._start + self._blocks * self._block, self.size)
        return batch


def streaming_blocks(
    handle: IO[bytes], on_invalid: InvalidRows, *, size: int, types: dict[str, pa.DataType]
) -> CsvBlocks:
    """The whole file through Arrow's streaming reader, from the handle's start; columns not
    in `types` are inferred from the first block. Raises ArrowInvalid as `open_csv` does."""
    reader = pa_csv.open_csv(
        handle,
        read_options=pa_csv.ReadOptions(block_size=BLOCK),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=unnumbered(on_invalid)),
        convert_options=pa_csv.ConvertOptions(column_types=types),
    )
    return CsvBlocks(reader.schema, size=size, open_rest=lambda: reader)


def typed_blocks(handle: IO[bytes], on_invalid: InvalidRows, *, size: int) -> CsvBlocks | None:
    """The first block parsed alone (its types inferred), then the rest streamed with those
    types; None (the handle back at the start) when the first block does not parse alone."""
    first = handle.read(BLOCK)
    whole = not handle.read(1)  # the file is one block: Arrow would not cut it
    if not whole:
        first = first[: first.rfind(b"\n") + 1]
    try:
        table = pa_csv.read_csv(
            io.BytesIO(first),
            read_options=pa_csv.ReadOptions(block_size=BLOCK, use_threads=False),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=unnumbered(on_invalid)),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        table = None
    names = table.schema.names if table is not None else []
    if table is None or len(set(names)) != len(names):
        handle.seek(0)
        on_invalid.restart()
        return None
    types = {f.name: f.type for f in table.schema}
    start = len(first)

    def open_rest() -> pa_csv.CSVStreamingReader | None:
        handle.seek(start)
        try:
            return pa_csv.open_csv(
                handle,
                read_options=pa_csv.ReadOptions(block_size=REST_BLOCK, column_names=names, use_threads=False),
                parse_options=pa_csv.ParseOptions(invalid_row_handler=unnumbered(on_invalid)),
                convert_options=pa_csv.ConvertOptions(column_types=types),
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                return None
            raise

    head = table.combine_chunks().to_batches()[0] if table.num_rows else None
    return CsvBlocks(
        table.schema,
        size=size,
        head=head,
        start=start,
        block=REST_BLOCK,
        open_rest=None if whole else open_rest,
    )
