"""`window:` translated to Beam: fixed, sliding and session windows give the local operator's rows;
a stream with `emit: every` fires early, then on time, under one key."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from inferline.engine.beam import build, process_rows
from inferline.engine.beam_windows import window_rows
from inferline.engine.windows import WindowOperator
from inferline.errors import SpecError
from inferline.pipeline import PipelineSpec, parse_spec

# (event second, class, score) in arrival order: out of order, all within the 30 s of lateness.
EVENTS = [(1, 0, 0.1), (5, 1, 0.9), (12, 0, 0.2), (8, 1, 0.8), (25, 0, 0.3), (3, 0, 0.5), (31, 1, 0.7)]
EVENTS += [(14, 1, 0.6), (40, 1, 0.4)]
AGGREGATES = {"n": "count(*)", "ids": "list(id ORDER BY id)", "rate": "avg(score > 0.5)", "top": "max(score)"}


def spec(**window: Any) -> PipelineSpec:
    raw = {
        "name": "w",
        "source": {"kind": "jsonl", "path": "in.jsonl"},
        "sink": {"kind": "parquet", "path": "out/rows.parquet"},
        "window": {
            "time": "t",
            "group_by": ["cls"],
            "allowed_lateness": "30s",
            "aggregates": AGGREGATES,
            "sink": {"kind": "parquet", "path": "out/w.parquet"},
            **window,
        },
    }
    return parse_spec(raw, origin="w.yaml")


def rows() -> list[tuple[str, dict[str, Any]]]:
    return [(f"m{i}", {"id": i, "t": float(t), "cls": c, "score": s}) for i, (t, c, s) in enumerate(EVENTS)]


def local(pipeline: PipelineSpec) -> list[dict[str, Any]]:
    assert pipeline.window is not None
    op = WindowOperator(pipeline.window)
    op.open(None)
    letters = op.add(pa.RecordBatch.from_pylist([{"key": k, **r} for k, r in rows()]), ingest_time=0)
    assert letters == []
    closed = op.close(final=True)
    op.close_state()
    assert closed is not None
    found: list[dict[str, Any]] = closed.to_pylist()
    return found


def direct(*, streaming: bool = False) -> PipelineOptions:
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = streaming
    return options


class _Windowed(beam.PTransform):  # type: ignore[type-arg]
    """Rows -> windowed rows of one spec, under its own label."""

    def __init__(self, pipeline_spec: PipelineSpec) -> None:
        super().__init__()
        self.pipeline_spec = pipeline_spec

    def expand(self, rows: Any) -> Any:
        out = process_rows(rows, self.pipeline_spec)
        return window_rows(out.batches, self.pipeline_spec, streaming=False)


WINDOWS = {
    "fixed": {"kind": "fixed", "size": "10s"},
    "sliding": {"kind": "sliding", "size": "20s", "every": "10s"},
    "session": {"kind": "session", "gap": "6s"},
}


def test_beam_gives_the_local_operators_rows() -> None:
    # Fixed, sliding and session windows as three branches of one pipeline (one runner start).
    with beam.Pipeline(options=direct()) as pipeline:
        source = pipeline | beam.Create(rows())
        for name, window in WINDOWS.items():
            pipeline_spec = spec(**window)
            expected = local(pipeline_spec)
            assert len(expected) >= 5
            got = source | name >> _Windowed(pipeline_spec)
            assert_that(got, equal_to(expected), label=f"Check_{name}")


def test_a_stream_fires_early_then_on_time_under_one_key() -> None:
    # emit: every 5s: after 6 s of processing time each group of window [0, 10) has one row
    # (early panes); a third row arrives, the watermark passes 10: the on-time panes hold all
    # rows so far. Messages are stamped at 9 s (publish time), after their event times.
    pipeline_spec = spec(kind="fixed", size="10s", allowed_lateness="0s", emit="every 5s")
    first = [TimestampedValue(r, 9) for r in rows()[:2]]
    stream = (
        test_stream.TestStream()
        .add_elements(first)
        .advance_processing_time(6)
        .add_elements([TimestampedValue(rows()[3], 9)])
        .advance_watermark_to(20)
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(options=direct(streaming=True)) as pipeline:
        out = process_rows(pipeline | stream, pipeline_spec, streaming=True)
        windows = window_rows(out.batches, pipeline_spec, streaming=True)
        got = windows | beam.Map(lambda r: (r["key"], r["cls"], r["n"], r["ids"]))
        one, zero = "0|10000000|1", "0|10000000|0"
        early = [(one, 1, 1, [1]), (zero, 0, 1, [0])]
        assert_that(got, equal_to([*early, (one, 1, 2, [1, 3]), (zero, 0, 1, [0])]))


def test_a_duckdb_window_sink_is_refused_in_one_line() -> None:
    pipeline_spec = spec(kind="fixed", size="10s", sink={"kind": "duckdb", "path": "w.duckdb", "table": "w"})
    with pytest.raises(SpecError, match=r"^w\.yaml: window\.sink kind 'duckdb' writes a local file"):
        build(beam.Pipeline(options=direct()), pipeline_spec)
