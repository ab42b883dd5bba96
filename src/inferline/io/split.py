"""`split:` on a sink: a deterministic hash split of rows into several outputs.

`split: {train: 0.8, eval: 0.2, by: key}` sends each row to `train` or `eval` by the MD5 of
its `by` column (default `key`), so the same row lands on the same side in every run, on
every machine. File sinks write `<path>/<name>.<ext>`; DuckDB sinks write `<table>_<name>`.
"""

from __future__ import annotations

import os
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from inferline.errors import SpecError
from inferline.io.base import Sink
from inferline.pipeline import SinkSpec

_BUCKETS = 1_000_000


def split_parts(sink: SinkSpec, *, origin: str) -> tuple[list[tuple[str, float, SinkSpec]], str]:
    """(name, fraction, sink spec) for each side of the split, and the `by` column."""
    raw = dict(sink.split or {})
    by = str(raw.pop("by", "key"))
    parts: list[tuple[str, float, SinkSpec]] = []
    for name, value in raw.items():
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise SpecError(
                f"{origin}: sink.split.{name}: expected a fraction like 0.8, got {value!r}"
            ) from None
        if not 0 <= fraction <= 1:
            raise SpecError(f"{origin}: sink.split.{name}: fraction must be between 0 and 1, got {fraction}")
        parts.append((str(name), fraction, _side(sink, str(name))))
    total = sum(f for _, f, _ in parts)
    if len(parts) < 2 or abs(total - 1.0) > 1e-6:
        raise SpecError(
            f"{origin}: sink.split: expected two or more fractions adding up to 1 (e.g. train: 0.8, "
            f"eval: 0.2), got {total:g}"
        )
    return parts, by


def _side(sink: SinkSpec, name: str) -> SinkSpec:
    if sink.kind == "duckdb":
        return SinkSpec(kind="duckdb", path=sink.path, table=f"{sink.table}_{name}")
    if sink.path is None:
        raise SpecError(f"sink kind {sink.kind!r} with split: needs path:")
    return SinkSpec(kind=sink.kind, path=os.path.join(sink.path, f"{name}.{sink.kind}"), options=sink.options)


def split_fractions(
    values: pa.Array, cutoffs: list[float], *, con: duckdb.DuckDBPyConnection | None = None
) -> np.ndarray:
    """The side index of each value: MD5 of its text, mapped to [0, 1), cut at `cutoffs`."""
    own = con is None
    con = duckdb.connect() if con is None else con
    con.register("v", pa.table({"v": values}))
    try:
        (buckets,) = (
            con.sql(f"SELECT (md5_number(v::VARCHAR) % {_BUCKETS})::BIGINT AS b FROM v").fetchnumpy().values()
        )
    finally:
        con.unregister("v")
        if own:
            con.close()
    position = np.asarray(buckets, dtype=np.float64) / _BUCKETS
    return np.searchsorted(np.asarray(cutoffs), position, side="right")


class SplitSink:
    """Routes each row to one of several sinks by a stable hash of a column."""

    def __init__(self, sink: SinkSpec, *, origin: str = "<spec>", stream: bool = False) -> None:
        self.spec = sink
        self.origin = origin
        self.stream = stream  # file sides are part directories (`io/parts.py`)
        self._parts, self.by = split_parts(sink, origin=origin)
        self._sinks: list[Sink] = []
        self._con: duckdb.DuckDBPyConnection | None = None
        fractions = np.cumsum([f for _, f, _ in self._parts])
        self._cutoffs = [float(c) for c in fractions[:-1]]

    def describe(self) -> str:
        return ", ".join(
            f"{name} ({fraction:g}): {s.describe()}"
            for (name, fraction, _), s in zip(self._parts, self._sinks, strict=False)
        ) or str(self.spec.path)

    def open(self) -> None:
        from inferline.io.factory import make_sink

        self._sinks = [make_sink(side, origin=self.origin, stream=self.stream) for _, _, side in self._parts]
        for sink in self._sinks:
            sink.open()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.by not in batch.schema.names:
            raise SpecError(
                f"{self.origin}: sink.split.by: column {self.by!r} not in results "
                f"({', '.join(batch.schema.names)})"
            )
        if self._con is None:
            self._con = duckdb.connect()  # one per sink: the writer hashes every batch
        sides = split_fractions(batch.column(self.by), self._cutoffs, con=self._con)
        for index, sink in enumerate(self._sinks):
            mask = sides == index
            if mask.any():
                sink.write(batch.filter(pa.array(mask)))

    def commit(self) -> None:
        for sink in self._sinks:
            sink.commit()

    def sides(self) -> list[Sink]:
        """The sink of each side, once open."""
        return list(self._sinks)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        if self._con is not None:
            self._con.close()
            self._con = None

    def abort(self) -> None:
        self._end("abort")

    def discard(self) -> None:
        self._end("discard")

    def _end(self, how: str) -> None:
        for sink in self._sinks:
            end: Any = getattr(sink, how, None)
            if end is not None:
                end()
            else:
                sink.close()
        if self._con is not None:
            self._con.close()
            self._con = None
