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

import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import InferlineError, SpecError, require

require("apache_beam", "beam")

import apache_beam as beam  # noqa: E402
from apache_beam.metrics.metric import Metrics  # noqa: E402
from apache_beam.ml.inference.base import ModelHandler as BeamModelHandler  # noqa: E402
from apache_beam.ml.inference.base import PredictionResult, RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # noqa: E402

from inferline.beam import ModelHandler  # noqa: E402
from inferline.engine.beam_files import file_rows  # noqa: E402
from inferline.engine.beam_io import (  # noqa: E402
    DEAD,
    NAMESPACE,
    Row,
    check_supported,
    dead_letter,
    dead_letter_sink,
    read_source,
    write_sink,
)
from inferline.engine.beam_windows import window_rows  # noqa: E402
from inferline.engine.process import BatchProcessor  # noqa: E402
from inferline.engine.run_summary import RunSummary  # noqa: E402
from inferline.engine.tensors import tensor_column  # noqa: E402
from inferline.io.base import DeadLetter, SourceBatch  # noqa: E402
from inferline.io.loaders import ImageLoader, make_loader  # noqa: E402
from inferline.io.split import split_fractions, split_parts  # noqa: E402
from inferline.io.targets import check_run_outputs  # noqa: E402
from inferline.models.base import LoadedModel  # noqa: E402
from inferline.pipeline import FILE_SINK_KINDS, ModelSpec, PipelineSpec  # noqa: E402

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
        processed = batches | "Process" >> beam.ParDo(_ProcessBatch(spec)).with_outputs(DEAD, main="done")
        emitted = processed.done | "Emit" >> beam.ParDo(_Emit(spec)).with_outputs(*_tags(spec))
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
    handler = _SpecHandler(spec, streaming=streaming, timed_batches=timed)
    inferred, failed = (
        rows
        | "RunInference"
        >> RunInference(handler, model_metadata_pcoll=model_metadata).with_exception_handling()
    )
    done = inferred | "Processed" >> beam.Map(lambda result: result.inference)
    emitted = done | "Emit" >> beam.ParDo(_Emit(spec)).with_outputs(*_tags(spec))
    label = ", ".join(_current_model_id(m) for m in models)
    bad_batches = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch, label)
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


@dataclass
class Processed:
    """One batch's results (an Arrow batch, or None) and dead letters, between transforms."""

    results: pa.RecordBatch | None
    dead: list[DeadLetter]


class _Stage:
    """What `RunInference`'s handler and the model-less DoFn share: a spec's processing,
    opened lazily on the worker (steps, hooks and loaders are not pickled)."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self._processor: BatchProcessor | None = None
        self._loader: ImageLoader | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_processor": None, "_loader": None}

    def run(self, elements: Sequence[tuple[str, Row]], models: list[LoadedModel]) -> Processed:
        if self._processor is None:
            self._processor = BatchProcessor.from_spec(self.spec)
            self._loader = make_loader(self.spec.source, origin=self.spec.origin)
        keys = pa.array([str(key) for key, _ in elements], type=pa.string())
        batch = SourceBatch(rows_to_batch([row for _, row in elements]), keys)
        if self._loader is not None:
            batch = self._loader(batch)
        results, dead = self._processor(batch.data, batch.keys, models)
        return Processed(results, [*batch.dead, *dead])


class _Models(list[LoadedModel]):
    """The spec's loaded models; a list Beam's shared model cache can hold a weak reference to."""


class _SpecHandler(BeamModelHandler[tuple[str, Row], PredictionResult, list[LoadedModel]]):
    """`RunInference`'s handler for a whole spec: it loads every model of the spec (through
    `inferline.beam.ModelHandler`), takes `(key, row)` examples and gives each batch one
    `Processed` as its inference. A model side input swaps the first (only) model."""

    def __init__(self, spec: PipelineSpec, *, streaming: bool, timed_batches: bool) -> None:
        super().__init__()
        self.loaders = [
            ModelHandler.from_spec(m, spec.batch, streaming=streaming, timed_batches=timed_batches)
            for m in spec.all_models
        ]
        self.name = spec.name
        self._stage = _Stage(spec)

    def load_model(self) -> list[LoadedModel]:
        return _Models(loader.load_model() for loader in self.loaders)

    def update_model_path(self, model_path: str | None = None) -> None:
        self.loaders[0].update_model_path(model_path)

    def run_inference(
        self,
        batch: Sequence[tuple[str, Row]],
        model: list[LoadedModel],
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        processed = self._stage.run(batch, model)
        return [PredictionResult(None, processed, ", ".join(m.model_id for m in model))]

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self.loaders[0].batch_elements_kwargs()

    def get_num_bytes(self, batch: Sequence[tuple[str, Row]]) -> int:
        return int(sum(8 * len(row) for _, row in batch))

    def get_metrics_namespace(self) -> str:
        return f"inferline_{self.name}"


class _ProcessBatch(beam.DoFn):
    """A pipeline without a model: each batch of `(key, row)` through the spec's steps."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.stage = _Stage(spec)

    def process(self, batch: list[tuple[str, Row]]) -> Iterator[Processed]:
        yield self.stage.run(batch, [])


class _Emit(beam.DoFn):
    """`Processed` batches -> result rows (split into sides with `split:`) and dead letters."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.split: tuple[list[str], list[float], str] | None = None
        sinks = [spec.sink]
        if spec.sink.split:
            parts, by = split_parts(spec.sink, origin=spec.origin)
            sinks = [side for _, _, side in parts]
            cutoffs = np.cumsum([fraction for _, fraction, _ in parts])[:-1]
            self.split = ([name for name, _, _ in parts], [float(c) for c in cutoffs], by)
        self.origin = spec.origin
        # File writers keep float32 columns float32; BigQuery's JSON encoder takes Python floats.
        self.numpy_floats = all(sink.kind in FILE_SINK_KINDS for sink in sinks)
        self.predicted = Metrics.counter(NAMESPACE, "rows_predicted")
        self.dead = Metrics.counter(NAMESPACE, "rows_dead")

    def process(self, processed: Processed) -> Iterator[Any]:
        for letter in processed.dead:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD, dead_letter(letter.key, letter.raw, letter.error, letter.stage, letter.model_id)
            )
        results = processed.results
        if results is None or not results.num_rows:
            return
        self.predicted.inc(results.num_rows)
        for name in results.schema.names:
            if name != "model_id" and not name.endswith("_model_id"):
                continue  # one `model_id`, or `<name>_model_id` per model side by side
            column = results.column(name)
            for model_id in set(column.drop_null().to_pylist()):
                count = pc.sum(pc.equal(column, model_id)).as_py()
                Metrics.counter(NAMESPACE, f"model_id:{model_id}").inc(count)
        rows = file_rows(results) if self.numpy_floats else results.to_pylist()
        if self.split is None:
            yield from rows
            return
        names, cutoffs, by = self.split
        if by not in results.schema.names:
            have = ", ".join(results.schema.names)
            raise SpecError(f"{self.origin}: sink.split.by: column {by!r} not in results ({have})")
        sides = split_fractions(results.column(by), cutoffs)
        for index, row in enumerate(rows):
            yield beam.pvalue.TaggedOutput(names[int(sides[index])], row)


def rows_to_batch(rows: Sequence[Row]) -> pa.RecordBatch:
    """Dict rows -> one Arrow batch: decoded images (2+ dimensional arrays) become a tensor
    column, other values keep the types Arrow infers; a column whose values do not share
    one type (as JSON messages may have) is kept as text, so a bad value dead-letters its
    row at the model instead of failing the batch."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    for name in names:
        values = [row.get(name) for row in rows]
        tensors = _stacked(values)
        if tensors is not None:
            field, column = tensor_column(name, tensors)
        else:
            try:
                column = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                column = pa.array([_as_text(v) for v in values], type=pa.string())
            field = pa.field(name, column.type)
        fields.append(field)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _stacked(values: list[Any]) -> np.ndarray | None:
    # Decoded images of one shape -> (n, *shape); anything else is not a tensor column.
    first = values[0] if values else None
    if not (isinstance(first, np.ndarray) and first.ndim >= 2):
        return None
    if not all(isinstance(v, np.ndarray) and v.shape == first.shape for v in values):
        return None
    return np.stack(values)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _is_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim >= 2


def _message(failure: Any) -> str:
    # Beam hands over (type, repr, traceback lines); the last line is "module.Type: message".
    kind, text, lines = failure
    last = str(lines[-1]).strip() if lines else str(text)
    prefix = f"{kind.__module__}.{kind.__qualname__}: "
    for head in (prefix, f"{kind.__qualname__}: "):
        if last.startswith(head):
            return last[len(head) :]
    return last


def _raw(row: Row) -> str:
    return json.dumps({k: "<tensor>" if _is_tensor(v) else v for k, v in row.items()}, default=str)


def _failed_batch(failed: Any, model_id: str) -> Iterator[Row]:
    """A batch whose processing raised. inferline's own errors (a missing input column, a
    misconfigured step) stop the run, as on the local engine; anything else (a model that
    fails to load, a bug) dead-letters the batch, each row with the error."""
    batch, failure = failed
    kind = failure[0]
    if isinstance(kind, type) and issubclass(kind, InferlineError):
        message = _message(failure)
        try:
            error: BaseException = kind(message)
        except TypeError:
            error = InferlineError(message)
        raise error
    error_text = f"model {model_id} failed: {kind.__name__}: {_message(failure)}".splitlines()[0]
    for key, row in batch:
        Metrics.counter(NAMESPACE, "rows_dead").inc()
        yield dead_letter(key, _raw(row), error_text, "predict", model_id)


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
