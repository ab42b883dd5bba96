"""`window:` on Beam: the result rows windowed by Beam, each (window, group) aggregated by DuckDB.

    result batches -> event times (as the local engine reads them) -> WindowInto(FixedWindows |
        SlidingWindows | Sessions, AfterWatermark trigger, allowed lateness) -> GroupByKey(group)
        -> DuckDB runs the local engine's GROUP BY over the window's rows -> window.sink

Running the same query (`window_sql.aggregate_query`) over the same rows gives the same
`key`, `window_start`, `window_end`, group columns and aggregate values as the local engine.
Beam's windows are aligned on the epoch like the local engine's, and a session is
[first event, last event + gap) on both. Triggers: `AfterWatermark` with a late firing per
late row within `allowed_lateness` and, on a stream with `emit: every`, early firings every
that many seconds of processing time; panes accumulate, so each firing is the window's whole
result under the same key (a table that upserts on `key` keeps the latest). A bounded input
has no early firings (its watermark passes every window at the end of the input) and no late
rows; past `allowed_lateness` Beam drops a row where the local engine dead-letters it.

Example:
    >>> windows = window_rows(batches, spec, streaming=False)  # doctest: +SKIP
    >>> write_sink(windows, spec.window.sink, streaming=False, label="Windows")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import duckdb
import pyarrow as pa
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp

from inferline.engine.beam_io import NAMESPACE, Row
from inferline.engine.window_sql import aggregate_query, cast_aggregates, failing_aggregate
from inferline.engine.window_times import event_times
from inferline.errors import WindowError
from inferline.pipeline import PipelineSpec, WindowSpec

_TABLE = "window_rows"
_Stamped = window.TimestampedValue[tuple[tuple[Any, ...], Row]]  # (group values, row) at its event time


def window_rows(batches: Any, spec: PipelineSpec, *, streaming: bool) -> Any:
    """Result batches (`pa.RecordBatch | None`) -> one row per (window, group), as dicts."""
    if spec.window is None:
        raise ValueError("window_rows needs a spec with window:")
    spec_window = spec.window
    rows = (
        batches
        | "WindowEventTimes" >> beam.ParDo(_EventTimes(spec_window, spec.origin))
        | "WindowInto"
        >> beam.WindowInto(
            window_fn(spec_window),
            trigger=watermark_trigger(spec_window, streaming=streaming),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=Duration(micros=spec_window.lateness_us),
        )
        | "WindowGroups" >> beam.GroupByKey()
        | "WindowAggregates" >> beam.ParDo(_Aggregate(spec_window, spec.origin))
    )
    if streaming:
        return rows  # the sink windows a stream's rows into its files
    # A bounded input's rows go to one output, not one file per window.
    return rows | "WindowRowsTogether" >> beam.WindowInto(window.GlobalWindows())


def window_fn(spec: WindowSpec) -> window.WindowFn:
    """`FixedWindows`, `SlidingWindows` or `Sessions` for `spec` (µs durations kept exact)."""
    if spec.kind == "session":
        return window.Sessions(Duration(micros=spec.gap_us))
    if spec.kind == "sliding":
        return window.SlidingWindows(Duration(micros=spec.size_us), Duration(micros=spec.every_us))
    return window.FixedWindows(Duration(micros=spec.size_us))


def watermark_trigger(spec: WindowSpec, *, streaming: bool) -> trigger.TriggerFn:
    """Fire when the watermark passes the window's end, again for each late row within
    lateness, and (streams with `emit: every`) early every that many seconds."""
    # The batch runner has no processing-time clock: early firings are for streams only.
    every = spec.emit_every if streaming else None
    # Beam's trigger proto keeps the delay in whole seconds.
    early = trigger.AfterProcessingTime(max(1, round(every))) if every is not None else None
    return trigger.AfterWatermark(early=early, late=trigger.AfterCount(1))


class _EventTimes(beam.DoFn):
    """A batch of result rows -> `(group values, row)` stamped with the row's event time."""

    def __init__(self, spec: WindowSpec, origin: str) -> None:
        self.spec = spec
        self.origin = origin
        self._con: duckdb.DuckDBPyConnection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_con": None}

    def process(self, results: pa.RecordBatch | None) -> Iterator[_Stamped]:
        if results is None or results.num_rows == 0:
            return
        missing = [g for g in self.spec.group_by if g not in results.schema.names]
        if missing:
            raise WindowError(
                f"{self.origin}: window.group_by: column {missing[0]!r} not found in the result rows "
                f"(columns: {', '.join(results.schema.names)})"
            )
        if self._con is None:
            self._con = duckdb.connect(config={"enable_external_access": False})
        times = event_times(
            results, self.spec.time, ingest_time=time.time(), con=self._con, origin=self.origin
        )
        for micros, row in zip(times.tolist(), results.to_pylist(), strict=True):
            group = tuple(row[g] for g in self.spec.group_by)
            yield window.TimestampedValue((group, row), Timestamp(micros=micros))


class _Aggregate(beam.DoFn):
    """One (window, group)'s rows -> its output row, by the local engine's DuckDB query."""

    def __init__(self, spec: WindowSpec, origin: str) -> None:
        self.spec = spec
        self.origin = origin
        self.rows = Metrics.counter(NAMESPACE, "window_rows")
        self._con: duckdb.DuckDBPyConnection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_con": None}

    def process(
        self, element: tuple[tuple[Any, ...], Iterable[Row]], bounds: Any = beam.DoFn.WindowParam
    ) -> Iterator[Row]:
        _, rows = element
        table = pa.Table.from_pylist(list(rows))
        booleans = {f.name for f in table.schema if pa.types.is_boolean(f.type)}
        aggregates = cast_aggregates(self.spec.aggregates, booleans)
        start, end = int(bounds.start.micros), int(bounds.end.micros)
        source = f"(SELECT *, {start}::BIGINT AS __ws, {end}::BIGINT AS __we FROM {_TABLE})"
        query = aggregate_query(
            source, where="true", start="__ws", end="__we", group_by=self.spec.group_by, aggregates=aggregates
        )
        if self._con is None:
            self._con = duckdb.connect(config={"enable_external_access": False})
        con = self._con
        con.register(_TABLE, table)
        try:
            out = con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            raise WindowError(
                failing_aggregate(con, _TABLE, self.spec.aggregates, aggregates, self.origin, exc)
            ) from None
        finally:
            con.unregister(_TABLE)
        self.rows.inc(out.num_rows)
        yield from out.to_pylist()
