"""The `Source` and `Sink` protocols and the `SourceBatch` that flows between stages.

A source yields `SourceBatch`es: an Arrow `RecordBatch` of the rows, a parallel array of
stable row keys, the rows that could not even be parsed (dead letters), and a position
the engine hands back to `ack()` once the sink has committed those rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("raw", pa.string()),
        ("error", pa.string()),
        ("stage", pa.string()),
        ("model_id", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class DeadLetter:
    """A row that could not be processed, with where and why."""

    key: str
    raw: str
    error: str
    stage: str
    model_id: str | None = None


@dataclass
class SourceBatch:
    """Rows read together: data, their keys, unparseable rows, and an ack position."""

    data: pa.RecordBatch
    keys: pa.Array
    dead: list[DeadLetter] = field(default_factory=list)
    position: Any = None
    # Monotonic publish times (seconds since epoch) per row, for streaming latency stats.
    published_at: list[float] | None = None
    # Where the input stands once this batch's rows are done, in the unit of the source's
    # `progress_total()` (bytes of the rows for files, else rows): the bar follows rows written.
    progress: int | None = None


@runtime_checkable
class Source(Protocol):
    """Yields `SourceBatch`es; unbounded sources also `ack(position)` after a commit.

    Example:
        >>> source = CsvSource("data/*.csv", batch_rows=4096)  # doctest: +SKIP
        >>> source.open()  # doctest: +SKIP
        >>> for batch in source.batches(): ...  # doctest: +SKIP
    """

    bounded: bool

    def open(self) -> None: ...

    def batches(self) -> Iterator[SourceBatch]: ...

    def ack(self, position: Any) -> None: ...

    def progress_total(self) -> int | None:
        """The input's size in the unit of `SourceBatch.progress`; None when unknown."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Takes result batches; `commit()` makes everything written so far durable.

    Table sinks upsert on `key`, so writing a row twice leaves one row.
    """

    def open(self) -> None: ...

    def write(self, batch: pa.RecordBatch) -> None: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


def dead_letter_batch(rows: list[DeadLetter]) -> pa.RecordBatch:
    """Dead letters as an Arrow batch in the `DEAD_LETTER_SCHEMA` shape."""
    import datetime as _dt

    now = _dt.datetime.now(_dt.timezone.utc)
    return pa.RecordBatch.from_pydict(
        {
            "key": [r.key for r in rows],
            "raw": [r.raw for r in rows],
            "error": [r.error for r in rows],
            "stage": [r.stage for r in rows],
            "model_id": [r.model_id for r in rows],
            "at": [now] * len(rows),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def row_as_json(batch: pa.RecordBatch, index: int) -> str:
    """One row of a batch as JSON text, for dead letters (rare, so per-row is fine)."""
    # Tensor columns (decoded images) would be megabytes of numbers: name their shape instead.
    names = [
        f.name
        for f in batch.schema
        if pa.types.is_fixed_size_list(f.type) and f.metadata and b"inferline.shape" in f.metadata
    ]
    row = (
        batch.drop_columns(names).slice(index, 1).to_pylist()[0]
        if names
        else batch.slice(index, 1).to_pylist()[0]
    )
    for name in names:
        field = batch.schema.field(name)
        shape = (field.metadata or {}).get(b"inferline.shape", b"?").decode()
        row[name] = f"<tensor {shape}>"
    return json.dumps(row, default=str)
