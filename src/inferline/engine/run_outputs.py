"""Where a local run's rows end up: their keys, dead letters, and the sinks' open and close.

Helpers of `engine/local.py`'s writer stage, kept apart from its threads and queues.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from inferline.engine.features import resolve_column
from inferline.engine.keys import KeyTracker
from inferline.engine.run_summary import RunStats
from inferline.engine.stage_queue import Work
from inferline.errors import InferlineError
from inferline.io.base import DeadLetter, Sink, SourceBatch, row_as_json
from inferline.io.factory import make_sink
from inferline.io.parts import PartSink
from inferline.io.split import SplitSink
from inferline.pipeline import PipelineSpec

log = logging.getLogger("inferline.engine")


def batch_keys(spec: PipelineSpec, batch: SourceBatch) -> pa.Array:
    """The batch's row keys: the spec's `key:` column, else the source's keys."""
    if not spec.key or batch.data.num_rows == 0:
        return batch.keys
    try:
        return resolve_column(batch.data, spec.key).cast(pa.string())
    except KeyError:
        raise InferlineError(
            f"{spec.origin}: key column {spec.key!r} not found "
            f"(columns: {', '.join(batch.data.schema.names)})"
        ) from None


def open_dead_sink(spec: PipelineSpec, *, stream: bool, results: Sink | None = None) -> Sink:
    """Open the spec's dead-letter sink; a DuckDB one in the results' file shares their commit."""
    dead_spec = spec.dead_letter_spec()
    assert dead_spec is not None
    sink = make_sink(dead_spec, origin=spec.origin, setting="--set dead_letter={}", stream=stream)
    sink.open()
    if dead_spec.kind == "duckdb" and results is not None:
        from inferline.io.duckdb import DuckDBSink

        if isinstance(sink, DuckDBSink) and isinstance(results, DuckDBSink):
            sink.join(results)  # same file: a batch's results and dead letters, one commit
    return sink


def check_keys(spec: PipelineSpec, stats: RunStats, keys: KeyTracker, results: pa.RecordBatch) -> None:
    """Count repeated keys in `results`; warn once, at the first repeat."""
    if "key" not in results.schema.names:
        return
    first = keys.duplicates == 0
    stats.duplicate_keys += keys.add(results.column("key"))
    if first and keys.duplicates:
        kept = (
            "rows with the same key replace each other in the table (the last one read is kept)"
            if is_table_sink(spec)
            else "the output keeps every row"
        )
        log.warning(
            "warning: key column %r is not unique (%r appears more than once): %s; "
            "name a unique column in key:",
            spec.key,
            keys.example,
            kept,
        )


def unwritable(spec: PipelineSpec, item: Work, error: str, *, stream: bool) -> list[DeadLetter]:
    """Dead letters for the rows of `item` that the sink refused."""
    results = item.results
    if results is None:
        return []
    keys = [str(k) for k in results.column("key").to_pylist()]
    if stream and spec.key:  # stream dead letters are keyed by message id
        by_key = dict(
            zip(batch_keys(spec, item.source).to_pylist(), item.source.keys.to_pylist(), strict=True)
        )
        keys = [by_key.get(k, k) for k in keys]
    return [
        DeadLetter(key=k, raw=row_as_json(results, i), error=error, stage="sink") for i, k in enumerate(keys)
    ]


def part_sinks(sink: Sink | None) -> list[PartSink]:
    """The part-file sinks in `sink` (both sides of a split sink)."""
    if isinstance(sink, SplitSink):
        return [p for side in sink.sides() for p in part_sinks(side)]
    return [sink] if isinstance(sink, PartSink) else []


def unique_keys(dead: list[DeadLetter]) -> list[DeadLetter]:
    """Suffix repeated keys (`#2`, `#3`): a row can fail more than once (several models)."""
    seen: dict[str, int] = {}
    for letter in dead:
        count = seen.get(letter.key, 0)
        seen[letter.key] = count + 1
        if count:
            letter.key = f"{letter.key}#{count + 1}"
    return dead


def is_table_sink(spec: PipelineSpec) -> bool:
    return spec.sink.kind == "duckdb"


def close_sink(sink: Sink, ok: bool, *, discard: bool = False) -> None:
    """Close `sink`; after a failure abort it, when interrupted discard it (if it can)."""
    # Interrupted: a file output is removed (it would be partial); after a failure it stays
    # beside the previous output, as `<path>.partial`, for inspection.
    action = getattr(sink, "discard" if discard else "abort", None) if not ok else None
    if action is not None:
        action()
    else:
        sink.close()
