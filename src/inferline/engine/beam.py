"""The Beam engine: a pipeline spec translated to Apache Beam transforms.

    source (fileio / Pub/Sub / Kafka) -> RunInference(handler running BatchProcessor)
        .with_exception_handling() -> result rows -> sink (files / BigQuery; split: sides)
                                  \\-> dead letters (parse, load, step, features, predict, hook)

Rows travel as `(key, row dict)`. Each batch `RunInference` forms is turned into an Arrow
batch and run through the local engine's own `BatchProcessor` (`load:`, steps, the model
with its hooks and labels, `output:`), so keys, result columns and dead letters are the
local engine's and the same spec gives the same output on either engine. `watch: true` on
a stream becomes Beam's `WatchFilePattern` side input, which swaps the model between batches.

Example:
    >>> spec = load_spec("examples/iris/pipeline.yaml")  # doctest: +SKIP
    >>> summary = run_beam(spec, ["--runner=DirectRunner"])  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from inferline.beam_import import import_run_inference
from inferline.errors import InferlineError, SpecError, require

require("apache_beam", "beam")
import_run_inference()

import apache_beam as beam  # noqa: E402
from apache_beam.ml.inference.base import RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # noqa: E402

from inferline.engine.beam_batches import Emit, ProcessBatch, Processed, SpecHandler, failed_batch  # noqa: E402
from inferline.engine.beam_io import (  # noqa: E402
    DEAD,
    NAMESPACE,
    check_supported,
    dead_letter_sink,
    read_source,
    write_sink,
)
from inferline.engine.beam_windows import window_rows  # noqa: E402
from inferline.engine.process import BatchProcessor  # noqa: E402
from inferline.engine.run_summary import RunSummary  # noqa: E402
from inferline.io.split import split_parts  # noqa: E402
from inferline.io.targets import check_run_outputs  # noqa: E402
from inferline.pipeline import ModelSpec, PipelineSpec  # noqa: E402

DEFAULT_RUNNER = "DirectRunner"
STREAM_SOURCES = ("pubsub", "kafka")


@dataclass
class BeamOutputs:
    """The PCollections a translated pipeline produces: result rows and dead-letter rows
    (and, with `split:` on the sink, each side's rows by name)."""

    results: Any
    dead: Any
    sides: dict[str, Any] = field(default_factory=dict)
    batches: Any = None  # each batch's result rows (`pa.RecordBatch | None`), for `window:`


def pipeline_options(args: Sequence[str], *, streaming: bool = False) -> PipelineOptions:
    """Beam options from the arguments after `--`; DirectRunner unless `--runner` is given.

    Since Beam 2.68 the implicit local runner is Prism, which downloads a binary when it
    starts, so the default is named explicitly.
    """
    args = list(args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, f"--runner={DEFAULT_RUNNER}")
    options = PipelineOptions(args)
    if streaming:
        options.view_as(StandardOptions).streaming = True
    return options


def beam_runner_name(args: Sequence[str]) -> str:
    """The Beam runner `args` select (DirectRunner by default), as run history records it."""
    return str(pipeline_options(args).view_as(StandardOptions).runner)


def is_streaming(spec: PipelineSpec, options: PipelineOptions | None = None) -> bool:
    if spec.source.kind in STREAM_SOURCES:
        return True
    return bool(options is not None and options.view_as(StandardOptions).streaming)


def build(pipeline: beam.Pipeline, spec: PipelineSpec, *, streaming: bool = False) -> BeamOutputs:
    """Add the spec's source, processing and sinks to `pipeline`."""
    check_supported(spec)
    models = spec.all_models
    string_columns = [name for model in models for name in model_inputs(model)]
    parsed = read_source(pipeline, spec, string_columns=string_columns)
    outputs = process_rows(parsed.rows, spec, streaming=streaming)
    if spec.sink.split:
        for name, _, side in split_parts(spec.sink, origin=spec.origin)[0]:
            write_sink(outputs.sides[name], side, streaming=streaming, label=f"Results_{name}")
    else:
        write_sink(outputs.results, spec.sink, streaming=streaming, label="Results")
    dead = (parsed[DEAD], outputs.dead) | "AllDeadLetters" >> beam.Flatten()
    dead_sink = dead_letter_sink(spec)
    if dead_sink is not None:
        write_sink(dead, dead_sink, streaming=streaming, label="DeadLetters")
    if spec.window is not None:
        windows = window_rows(outputs.batches, spec, streaming=streaming)
        write_sink(windows, spec.window.sink, streaming=streaming, label="Windows")
    return BeamOutputs(outputs.results, dead, outputs.sides, outputs.batches)


def process_rows(
    rows: Any, spec: PipelineSpec, *, streaming: bool = False, model_metadata: Any = None
) -> BeamOutputs:
    """`(key, row)` -> result rows and dead letters, as the local engine makes them.

    Rows are batched (by `RunInference` when there is a model) and each batch goes through
    the local engine's `BatchProcessor`: `load:`, steps, the model with its hooks and
    labels, steps after it and `output:`. `model_metadata` is a PCollection of
    `ModelMetadata` that swaps the model; with `watch: true` on a stream it is
    `WatchFilePattern(model.uri)`. With `split:` on the sink, `sides` holds each side's rows.
    """
    pipeline = rows.pipeline
    BatchProcessor.from_spec(spec)  # bad steps, hooks or label files fail here, before Beam starts
    models = spec.all_models
    if not models:
        # Bounded input: full batches (a bundle's tail may be smaller); streams: whatever came.
        smallest = 1 if streaming else spec.batch.max_size
        batches = rows | "Batch" >> beam.BatchElements(
            min_batch_size=smallest, max_batch_size=spec.batch.max_size
        )
        processed = batches | "Process" >> beam.ParDo(ProcessBatch(spec)).with_outputs(DEAD, main="done")
        emitted = processed.done | "Emit" >> beam.ParDo(Emit(spec)).with_outputs(*_tags(spec))
        dead = (processed[DEAD], emitted[DEAD]) | "ProcessDeadLetters" >> beam.Flatten()
        return _outputs(emitted, dead, spec, processed.done)
    model = models[0]
    if len(models) > 1 and any(m.watch for m in models) and streaming:
        raise SpecError(
            f"{spec.origin}: --runner beam swaps one watched model (Beam's model side input); "
            "watch: true with several models runs on the local engine"
        )
    if model_metadata is None and model.watch and streaming and model.uri:
        from apache_beam.ml.inference.utils import WatchFilePattern

        model_metadata = pipeline | "WatchModel" >> WatchFilePattern(
            file_pattern=model.uri, interval=max(1, int(model.watch_interval))
        )
    # Beam's DirectRunner fails to map the windows of time-based batches onto a model
    # side input, so a watched model batches by size within each bundle.
    timed = streaming and model_metadata is None
    handler = SpecHandler(spec, streaming=streaming, timed_batches=timed)
    inferred, failed = (
        rows
        | "RunInference"
        >> RunInference(handler, model_metadata_pcoll=model_metadata).with_exception_handling()
    )
    done = inferred | "Processed" >> beam.Map(lambda result: result.inference)
    emitted = done | "Emit" >> beam.ParDo(Emit(spec)).with_outputs(*_tags(spec))
    label = ", ".join(_current_model_id(m) for m in models)
    bad_batches = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_batch, label)
    dead = (emitted[DEAD], bad_batches) | "ModelDeadLetters" >> beam.Flatten()
    return _outputs(emitted, dead, spec, done)


def _tags(spec: PipelineSpec) -> tuple[str, ...]:
    sides = (
        tuple(name for name, _, _ in split_parts(spec.sink, origin=spec.origin)[0]) if spec.sink.split else ()
    )
    return (DEAD, *sides)


def _outputs(emitted: Any, dead: Any, spec: PipelineSpec, processed: Any) -> BeamOutputs:
    sides = {name: emitted[name] for name in _tags(spec)[1:]}
    results = tuple(sides.values()) | "AllSides" >> beam.Flatten() if sides else emitted[None]
    batches = processed | "ResultBatches" >> beam.Map(_results) if spec.window is not None else None
    return BeamOutputs(results, dead, sides, batches)


def _results(processed: Processed) -> pa.RecordBatch | None:
    return processed.results


def model_inputs(model: ModelSpec) -> list[str]:
    """The input columns: the spec's `inputs:`, else those recorded in the model store."""
    if model.input_columns or not model.store:
        return model.input_columns
    from inferline.models.registry import store_version

    return list(store_version(model).inputs)


def _current_model_id(model: ModelSpec) -> str:
    # Rows that never reach the model are labelled with the version current at launch,
    # as the local engine does; workers may have swapped it since on a stream.
    from inferline.models.registry import resolve_uri, store_version

    try:
        version = store_version(model).version if model.store else resolve_uri(model).version
        return f"{model.name}/{version}"
    except InferlineError:
        return model.name


def run_beam(spec: PipelineSpec, beam_args: Sequence[str] = (), *, limit: int | None = None) -> RunSummary:
    """Translate `spec` and run it on the Beam runner named in `beam_args` (DirectRunner by default)."""
    if limit is not None:
        raise SpecError("--limit is not supported with --runner beam; run on a smaller input instead")
    check_supported(spec)
    check_run_outputs(spec)
    options = pipeline_options(beam_args)
    streaming = is_streaming(spec, options)
    if streaming:
        options.view_as(StandardOptions).streaming = True
    started = time.monotonic()
    scratch = _local_temp_location(options)
    try:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, spec, streaming=streaming)
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:
        cause = _inferline_cause(exc)
        if cause is not None:
            raise cause from exc
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    counters = _counters(result)
    model_ids = sorted(k.split(":", 1)[1] for k in counters if k.startswith("model_id:"))
    dead_sink = dead_letter_sink(spec)
    return RunSummary(
        pipeline=spec.name,
        rows_read=counters.get("rows_read", 0),
        rows_predicted=counters.get("rows_predicted", 0),
        rows_dead=counters.get("rows_dead", 0),
        seconds=max(time.monotonic() - started, 1e-9),
        model_ids=model_ids,
        output=spec.sink.describe(),
        dead_letter=dead_sink.describe() if dead_sink is not None and counters.get("rows_dead") else None,
        with_model=bool(spec.all_models),
        window_output=spec.window.sink.describe() if spec.window is not None else None,
        window_rows=counters.get("window_rows", 0),
    )


def _local_temp_location(options: PipelineOptions) -> str | None:
    # File sinks stage their output under temp_location (else beside the output, where Beam
    # leaves an empty `.temp<uuid>` folder). On the DirectRunner a private local folder
    # will do; other runners need a shared --temp_location such as gs://bucket/tmp.
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    cloud = options.view_as(GoogleCloudOptions)
    if cloud.temp_location or options.view_as(StandardOptions).runner != DEFAULT_RUNNER:
        return None
    scratch = tempfile.mkdtemp(prefix="inferline-beam-")
    cloud.temp_location = scratch
    return scratch


def _counters(result: Any) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError):  # some runners do not report metrics
        return {}
    totals: dict[str, int] = {}
    for counter in found:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def _inferline_cause(exc: BaseException) -> InferlineError | None:
    # Runners re-raise a DoFn's exception wrapped with their own context; find ours.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InferlineError):
            message = str(current).splitlines()[0].split(" [while running")[0]
            try:
                return type(current)(message)
            except TypeError:
                return current
        current = current.__cause__ or current.__context__
    return None
