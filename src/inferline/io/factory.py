"""Spec -> Source/Sink objects. A new kind is one module plus one branch here."""

from __future__ import annotations

import importlib
from typing import Any

from inferline.errors import SpecError
from inferline.io.base import Sink, Source
from inferline.pipeline import PipelineSpec, SinkSpec

# kind -> "module:Class"; imported lazily so optional dependencies stay optional.
SOURCES: dict[str, str] = {
    "csv": "inferline.io.files:CsvSource",
    "jsonl": "inferline.io.files:JsonlSource",
    "parquet": "inferline.io.files:ParquetSource",
    "table": "inferline.io.duckdb_source:TableSource",
    "images": "inferline.io.images:ImagesSource",
    "objects": "inferline.io.objects:ObjectsSource",
    "topic": "inferline.io.topic_source:TopicSource",
}

SINKS: dict[str, str] = {
    "duckdb": "inferline.io.duckdb:DuckDBSink",
    "parquet": "inferline.io.filesinks:ParquetSink",
    "jsonl": "inferline.io.filesinks:JsonlSink",
    "csv": "inferline.io.filesinks:CsvSink",
    "topic": "inferline.io.topic_sink:TopicSink",
}


# Kinds only Apache Beam's connectors provide, and which connector.
BEAM_ONLY: dict[str, str] = {
    "pubsub": "ReadFromPubSub",
    "kafka": "ReadFromKafka",
    "bigquery": "WriteToBigQuery",
}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def make_source(spec: PipelineSpec, *, string_columns: list[str] | None = None) -> Source:
    """The source for `spec.source`, reading batches of `spec.batch.max_size` rows."""
    src = spec.source
    if src.kind in BEAM_ONLY:
        raise SpecError(
            f"{spec.origin}: source kind {src.kind!r} runs under --runner beam ({BEAM_ONLY[src.kind]}); "
            "the local engine reads streams from kind: topic (Redis Streams or the embedded queue)"
        )
    if src.kind not in SOURCES:
        raise SpecError(f"{spec.origin}: source kind {src.kind!r} is not available in this build")
    cls = _load(SOURCES[src.kind])
    rows = spec.batch.max_size
    if src.kind in ("csv", "jsonl", "parquet"):
        assert src.path is not None
        source: Source = cls(src.path, batch_rows=rows, string_columns=string_columns)
    elif src.kind == "table":
        if not (src.path and src.table):
            raise SpecError(f"{spec.origin}: source kind 'table' needs path: (a .duckdb file) and table:")
        source = cls(src.path, src.table, batch_rows=rows)
    else:
        source = cls(spec)
    return source


def make_sink(
    sink: SinkSpec, *, origin: str = "<spec>", setting: str = "--set sink.path={}", stream: bool = False
) -> Sink:
    """The sink for a sink spec (also used for the dead-letter sink). `setting` is how the
    user sets its path, for the hint when a file sink refuses to replace another file.
    On a `stream`, a file sink writes rolled part files (`io/parts.py`)."""
    if sink.split:
        from inferline.io.split import SplitSink

        return SplitSink(sink, origin=origin, stream=stream)
    if sink.kind in BEAM_ONLY:
        raise SpecError(
            f"{origin}: sink kind {sink.kind!r} runs under --runner beam ({BEAM_ONLY[sink.kind]}); "
            "on the local engine write kind: duckdb or parquet"
        )
    if sink.kind not in SINKS:
        raise SpecError(f"{origin}: sink kind {sink.kind!r} is not available in this build")
    if stream and sink.kind in ("parquet", "jsonl", "csv"):
        from inferline.io.parts import PartSink

        assert sink.path is not None
        return PartSink(sink.path, sink.kind, options=sink.options, setting=setting, origin=origin)
    cls = _load(SINKS[sink.kind])
    if sink.kind == "duckdb":
        result: Sink = cls(sink.path, sink.table or "predictions", setting=setting)
    elif sink.kind in ("parquet", "jsonl", "csv"):
        result = cls(sink.path, setting=setting)
    else:
        result = cls(sink)
    return result
