"""Beam sources and sinks for a pipeline spec: files through `fileio`, Pub/Sub, Kafka, BigQuery.

Rows travel as `(key, row dict)`. File sources match files with `fileio.MatchFiles` and parse
each file with the local engine's own parsers, so keys (`<file uri>:<row index>`), types and
dead letters are the same on every runner; one file is read by one worker. File sinks are
`fileio.WriteToFiles` with Parquet/JSONL/CSV writers that take the schema from the rows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.window import FixedWindows, GlobalWindow

from inferline.engine.beam_files import CsvRows, JsonlRows, ParquetRows
from inferline.errors import InputError, SpecError, require
from inferline.pipeline import FILE_SINK_KINDS, PipelineSpec, SinkSpec

DEAD = "dead"
NAMESPACE = "inferline"
FILE_SOURCES = ("csv", "jsonl", "parquet")
BEAM_SOURCES = (*FILE_SOURCES, "images", "objects", "pubsub", "kafka")
BEAM_SINKS = (*FILE_SINK_KINDS, "bigquery")

Row = dict[str, Any]


def dead_letter(key: str, raw: str, error: str, stage: str, model_id: str | None = None) -> Row:
    """A dead-letter row in the local engine's `DEAD_LETTER_SCHEMA` shape."""
    at = _dt.datetime.now(_dt.timezone.utc).isoformat()
    return {"key": key, "raw": raw, "error": error, "stage": stage, "model_id": model_id, "at": at}


def check_supported(spec: PipelineSpec) -> None:
    """Refuse, in one line, what cannot run distributed, before any Beam work starts."""
    kind = spec.source.kind
    if kind not in BEAM_SOURCES:
        raise SpecError(
            f"{spec.origin}: source kind {kind!r} cannot run under --runner beam; "
            f"use one of {', '.join(BEAM_SOURCES)}"
        )
    window_sink = spec.window.sink if spec.window is not None else None
    for where, sink in (
        ("sink", spec.sink),
        ("dead_letter", dead_letter_sink(spec)),
        ("window.sink", window_sink),
    ):
        if sink is None or sink.kind in BEAM_SINKS:
            continue
        if sink.kind == "duckdb":
            raise SpecError(
                f"{spec.origin}: {where} kind 'duckdb' writes a local file that Beam workers cannot share; "
                "under --runner beam use kind: parquet (then query it with DuckDB) or kind: bigquery"
            )
        raise SpecError(
            f"{spec.origin}: {where} kind {sink.kind!r} cannot run under --runner beam; "
            f"use one of {', '.join(BEAM_SINKS)}"
        )


def dead_letter_sink(spec: PipelineSpec) -> SinkSpec | None:
    """As the local engine's, except that a BigQuery sink keeps its errors in BigQuery."""
    if spec.sink.kind == "bigquery" and spec.dead_letter in (None, True) and spec.sink.table:
        return SinkSpec(kind="bigquery", table=f"{spec.sink.table}_errors", options=spec.sink.options)
    return spec.dead_letter_spec()


# --- sources -------------------------------------------------------------------------------
def read_source(pipeline: beam.Pipeline, spec: PipelineSpec, *, string_columns: list[str]) -> Any:
    """The spec's source as a PCollection of `(key, row)`, with tagged output `dead`."""
    src = spec.source
    if src.kind in FILE_SOURCES:
        assert src.path is not None  # the spec validator guarantees it
        return (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(src.path)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ParseFiles"
            >> beam.ParDo(ParseFile(src.kind, string_columns, spec.key)).with_outputs(DEAD, main="rows")
        )
    if src.kind == "images":
        from inferline.io.images import ImageSettings

        assert src.path is not None
        return (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(src.path)
            | "ReadMatches" >> fileio.ReadMatches()
            | "DecodeImages"
            >> beam.ParDo(DecodeImage(ImageSettings.from_spec(src))).with_outputs(DEAD, main="rows")
        )
    if src.kind == "objects":
        assert src.path is not None
        return (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(src.path)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ReadObjects"
            >> beam.ParDo(ReadObject(src.options.get("data", True) is not False)).with_outputs(
                DEAD, main="rows"
            )
        )
    if src.kind == "pubsub":
        return (
            pipeline
            | "ReadFromPubSub" >> pubsub_read(spec)
            | "ParseMessages"
            >> beam.ParDo(ParseMessage("pubsub", spec.key, load=src.load)).with_outputs(DEAD, main="rows")
        )
    if src.kind == "kafka":
        return (
            pipeline
            | "ReadFromKafka" >> kafka_read(spec)
            | "ParseMessages"
            >> beam.ParDo(ParseMessage("kafka", spec.key, load=src.load)).with_outputs(DEAD, main="rows")
        )
    raise SpecError(f"{spec.origin}: source kind {src.kind!r} is not available under --runner beam yet")


def pubsub_read(spec: PipelineSpec) -> beam.PTransform[Any, Any]:
    """`ReadFromPubSub` for `source: {kind: pubsub, topic: projects/P/topics/T}` (or
    `options: {subscription: projects/P/subscriptions/S}`)."""
    from apache_beam.io.gcp.pubsub import ReadFromPubSub

    options = dict(spec.source.options)
    subscription = options.pop("subscription", None)
    if not (spec.source.topic or subscription):
        raise SpecError(
            f"{spec.origin}: source kind 'pubsub' needs topic: projects/<project>/topics/<name> "
            "or options: {subscription: projects/<project>/subscriptions/<name>}"
        )
    return ReadFromPubSub(
        topic=None if subscription else spec.source.topic,
        subscription=subscription,
        with_attributes=True,
        **options,
    )


def kafka_read(spec: PipelineSpec) -> beam.PTransform[Any, Any]:
    """`ReadFromKafka` (a Java cross-language transform: the runner needs Java) for
    `source: {kind: kafka, url: host:9092, topic: name}`."""
    from apache_beam.io.kafka import ReadFromKafka

    return ReadFromKafka(consumer_config=kafka_config(spec), topics=[spec.source.topic], with_metadata=True)


def kafka_config(spec: PipelineSpec) -> dict[str, str]:
    """Kafka consumer settings: bootstrap servers from `url:`, group from `group:` (default
    the pipeline name), reading from the earliest offset; `options:` add or override."""
    if not (spec.source.url and spec.source.topic):
        raise SpecError(
            f"{spec.origin}: source kind 'kafka' needs url: (bootstrap servers, host:9092) and topic:"
        )
    return {
        "bootstrap.servers": spec.source.url.removeprefix("kafka://"),
        "group.id": spec.source.group or spec.name,
        "auto.offset.reset": "earliest",
        **{k: str(v) for k, v in spec.source.options.items()},
    }


class _SourceDoFn(beam.DoFn):
    """A source's parsing step: counts rows read and dead-lettered as the run summary reports."""

    def __init__(self) -> None:
        self.read = Metrics.counter(NAMESPACE, "rows_read")
        self.dead = Metrics.counter(NAMESPACE, "rows_dead")

    def bury(self, key: str, raw: str, error: str, stage: str) -> Any:
        """Count one dead letter and return it as the `dead` tagged output."""
        self.dead.inc()
        return beam.pvalue.TaggedOutput(DEAD, dead_letter(key, raw, error, stage))


class ParseFile(_SourceDoFn):
    """One matched file -> `(key, row)` per row, parsed by the local engine's file readers."""

    def __init__(self, kind: str, string_columns: list[str], key: str | None) -> None:
        self.kind = kind
        self.string_columns = string_columns
        self.key = key
        super().__init__()

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        from inferline.io import files

        uri = display_uri(readable.metadata.path)
        classes = {"csv": files.CsvSource, "jsonl": files.JsonlSource, "parquet": files.ParquetSource}
        source = classes[self.kind](uri, string_columns=self.string_columns)
        index = 0
        with readable.open() as handle:
            for batch, dead, _ in source._read(handle, uri, readable.metadata.size_in_bytes):
                for letter in dead:
                    self.read.inc()
                    yield self.bury(letter.key, letter.raw, letter.error, letter.stage)
                if self.key and batch.num_rows and self.key not in batch.schema.names:
                    raise InputError(
                        f"{uri}: key column {self.key!r} not found (columns: {', '.join(batch.schema.names)})"
                    )
                rows = batch.to_pylist()
                self.read.inc(len(rows))
                for row in rows:
                    line = row.pop("__line__", None)
                    number = index if line is None else line
                    index += 1
                    yield (str(row[self.key]) if self.key else f"{uri}:{number}"), row


class DecodeImage(_SourceDoFn):
    """One image file -> `(uri, {uri, width, height, image})` with `image` a float32 array laid
    out as the source says; an unreadable image becomes a dead letter (stage `decode`)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        super().__init__()

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        from inferline.io.images import decode_with_size

        uri = display_uri(readable.metadata.path)
        self.read.inc()
        try:
            pixels, (width, height) = decode_with_size(readable.read(), self.settings)
        except (InputError, OSError) as exc:
            yield self.bury(uri, uri, f"{uri}: {exc}", "decode")
            return
        yield uri, {"uri": uri, "width": width, "height": height, "image": pixels}


class ReadObject(_SourceDoFn):
    """One matched file -> `(uri, {uri, content_type, size, updated, data})`, as the local
    `objects` source gives it; a file that cannot be read becomes a dead letter (stage `read`)."""

    def __init__(self, read_data: bool) -> None:
        self.read_data = read_data
        super().__init__()

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        from inferline.io.objects import object_row

        uri = display_uri(readable.metadata.path)
        self.read.inc()
        seconds = readable.metadata.last_updated_in_seconds
        updated = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc) if seconds else None
        try:
            data = readable.read() if self.read_data else None
        except OSError as exc:
            yield self.bury(uri, uri, f"{uri}: cannot read file ({exc})".splitlines()[0], "read")
            return
        yield uri, object_row(uri, int(readable.metadata.size_in_bytes), updated, data)


class ParseMessage(_SourceDoFn):
    """A Pub/Sub or Kafka message holding one JSON object -> `(key, row)`.

    The key is the spec's `key:` field, else the Pub/Sub message id or Kafka's
    `topic:partition:offset`, so a redelivered message keeps its key.
    """

    def __init__(self, kind: str, key: str | None, *, load: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self.load = load
        super().__init__()

    def process(self, message: Any) -> Iterator[Any]:
        if self.kind == "pubsub":
            data, ident = message.data, message.message_id
        else:
            data, ident = message.value, f"{message.topic}:{message.partition}:{message.offset}"
        self.read.inc()
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
        try:
            row = _file_message(text) if self.load else json.loads(text)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except ValueError as exc:
            yield self.bury(str(ident), text, f"message {ident}: {exc}".splitlines()[0], "parse")
            return
        key = row.get(self.key) if self.key else None
        yield (str(key) if key is not None else str(ident)), row


def _file_message(text: str) -> Any:
    # With `load:`, a message may be just the file's path, bare or as a JSON string.
    try:
        value = json.loads(text)
    except ValueError:
        value = text.strip()
    return {"uri": value} if isinstance(value, str) else value


def display_uri(path: str) -> str:
    """A file's uri as the local engine writes it in keys: absolute local paths, else as given."""
    if "://" in path:
        return path
    return os.path.abspath(path)


# --- sinks -----------------------------------------------------------------------------------
def write_sink(rows: Any, sink: SinkSpec, *, streaming: bool, label: str) -> Any:
    """Write `rows` (dicts) to a file or BigQuery sink."""
    if sink.kind == "bigquery":
        return rows | f"{label}ToBigQuery" >> bigquery_write(sink, streaming=streaming)
    assert sink.path is not None
    directory, name = os.path.split(sink.path)
    stem, suffix = os.path.splitext(name)
    shards = int(sink.options.get("shards", 1))
    if streaming:
        seconds = float(sink.options.get("window_seconds", 60))
        rows = rows | f"{label}Window" >> beam.WindowInto(FixedWindows(seconds))
    writers = {"parquet": ParquetRows, "jsonl": JsonlRows, "csv": CsvRows}
    return rows | f"{label}ToFiles" >> fileio.WriteToFiles(
        path=directory or ".",
        file_naming=file_naming(stem, suffix),
        sink=writers[sink.kind],
        shards=shards,
        # 0 open writers per bundle: every row goes through the sharded path, so the number
        # of files is `shards` (the default is one file per bundle).
        max_writers_per_bundle=0,
    )


def file_naming(stem: str, suffix: str) -> Callable[..., str]:
    """`out/p.parquet` as asked when there is one file; else `p-00000-of-00004.parquet`,
    with the window's start and end when streaming."""
    sharded: Any = fileio.default_file_naming(stem, suffix)

    def name(window: Any, pane: Any, shard: int, total: int, compression: Any, destination: Any) -> str:
        if total == 1 and window == GlobalWindow():
            return f"{stem}{suffix}"
        return str(sharded(window, pane, shard, total, compression, destination))

    return name


def bigquery_write(sink: SinkSpec, *, streaming: bool) -> beam.PTransform[Any, Any]:
    """`WriteToBigQuery` for `sink: {kind: bigquery, table: project:dataset.table}`."""
    require("google.cloud.bigquery", "gcp")
    from apache_beam.io.gcp.bigquery import WriteToBigQuery

    return WriteToBigQuery(**bigquery_args(sink, streaming=streaming))


def bigquery_args(sink: SinkSpec, *, streaming: bool) -> dict[str, Any]:
    """Arguments for `WriteToBigQuery`: append, creating the table if needed.

    `options: {schema: "key:STRING,prediction:INTEGER,..."}` fixes the schema; without it
    batch loads let BigQuery detect it (streaming inserts need a schema or an existing
    table). Other `options:` pass through, e.g. `method: STORAGE_WRITE_API`.
    """
    if not sink.table:
        raise SpecError("sink kind 'bigquery' needs table: project:dataset.table")
    options = dict(sink.options)
    schema = options.pop("schema", None)
    method = options.pop("method", "STREAMING_INSERTS" if streaming else "FILE_LOADS")
    if schema is None and method == "FILE_LOADS":
        schema = "SCHEMA_AUTODETECT"
    return {
        "table": sink.table,
        "schema": schema,
        "method": method,
        "create_disposition": "CREATE_IF_NEEDED",
        "write_disposition": "WRITE_APPEND",
        **options,
    }
