"""The Beam engine: a pipeline spec translated to Apache Beam transforms.

    source (fileio / Pub/Sub / Kafka) -> RunInference(inferline.beam.ModelHandler)
        .with_exception_handling() -> result rows -> sink (files / BigQuery)
                                  \\-> dead letters (parse, features, predict) -> dead-letter sink

Rows travel as `(key, row dict)`; keys, result columns and dead-letter rows are the local
engine's, so the same spec gives the same output on either engine. `watch: true` on a
stream becomes Beam's `WatchFilePattern` side input, which swaps the model between batches.

Example:
    >>> spec = load_spec("examples/iris/pipeline.yaml")  # doctest: +SKIP
    >>> summary = run_beam(spec, ["--runner=DirectRunner"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.errors import InferlineError, SpecError, require

require("apache_beam", "beam")

import apache_beam as beam  # noqa: E402
from apache_beam.metrics.metric import Metrics  # noqa: E402
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # noqa: E402

from inferline.beam import ModelHandler, row_features  # noqa: E402
from inferline.engine.beam_io import (  # noqa: E402
    DEAD,
    NAMESPACE,
    check_supported,
    dead_letter,
    dead_letter_sink,
    read_source,
    write_sink,
)
from inferline.engine.features import RESULT_COLUMNS  # noqa: E402
from inferline.engine.local import RunSummary  # noqa: E402
from inferline.pipeline import BatchSpec, ModelSpec, PipelineSpec  # noqa: E402

DEFAULT_RUNNER = "DirectRunner"
STREAM_SOURCES = ("pubsub", "kafka")


@dataclass
class BeamOutputs:
    """The PCollections a translated pipeline produces: result rows and dead-letter rows."""

    results: Any
    dead: Any


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


def is_streaming(spec: PipelineSpec, options: PipelineOptions | None = None) -> bool:
    if spec.source.kind in STREAM_SOURCES:
        return True
    return bool(options is not None and options.view_as(StandardOptions).streaming)


def build(pipeline: beam.Pipeline, spec: PipelineSpec, *, streaming: bool = False) -> BeamOutputs:
    """Add the spec's source, model and sinks to `pipeline`."""
    check_supported(spec)
    models = spec.all_models
    if len(models) > 1:
        raise SpecError(f"{spec.origin}: --runner beam runs one model per pipeline; give model: not models:")
    string_columns = model_inputs(models[0]) if models else []
    parsed = read_source(pipeline, spec, string_columns=string_columns)
    outputs = predict_rows(
        parsed.rows,
        models[0] if models else None,
        spec.batch,
        keep=spec.keep,
        streaming=streaming,
    )
    write_sink(outputs.results, spec.sink, streaming=streaming, label="Results")
    dead = (parsed[DEAD], outputs.dead) | "AllDeadLetters" >> beam.Flatten()
    dead_sink = dead_letter_sink(spec)
    if dead_sink is not None:
        write_sink(dead, dead_sink, streaming=streaming, label="DeadLetters")
    return BeamOutputs(outputs.results, dead)


def predict_rows(
    rows: Any,
    model: ModelSpec | None,
    batch: BatchSpec,
    *,
    keep: list[str] | None = None,
    streaming: bool = False,
    model_metadata: Any = None,
) -> BeamOutputs:
    """`(key, row)` -> result rows (key, kept columns, prediction, scores, model_id) and dead
    letters. `model_metadata` is a PCollection of `ModelMetadata` that swaps the model; with
    `watch: true` on a stream it is `WatchFilePattern(model.uri)`."""
    pipeline = rows.pipeline
    if model is None:
        results = rows | "Passthrough" >> beam.Map(lambda kv: {"key": kv[0], **kv[1]})
        return BeamOutputs(results, pipeline | "NoDeadLetters" >> beam.Create([]))
    if model_metadata is None and model.watch and streaming and model.uri:
        from apache_beam.ml.inference.utils import WatchFilePattern

        model_metadata = pipeline | "WatchModel" >> WatchFilePattern(
            file_pattern=model.uri, interval=max(1, int(model.watch_interval))
        )
    inputs = model_inputs(model)
    # Beam's DirectRunner fails to map the windows of time-based batches onto a model
    # side input, so a watched model batches by size within each bundle.
    timed = streaming and model_metadata is None
    keyed: Any = KeyedModelHandler(
        ModelHandler.from_spec(model, batch, streaming=streaming, timed_batches=timed)
    )
    handler = keyed.with_preprocess_fn(_Features(inputs))
    inferred, failed = (
        rows
        | "RunInference"
        >> RunInference(handler, model_metadata_pcoll=model_metadata).with_exception_handling()
    )
    results = inferred | "ResultRows" >> beam.ParDo(_ResultRow(inputs, keep))
    label = _current_model_id(model)
    bad_rows = failed.failed_preprocessing[0] | "FeatureErrors" >> beam.Map(_feature_error, label)
    bad_batches = failed.failed_inferences | "PredictErrors" >> beam.FlatMap(_predict_errors, label)
    dead = (bad_rows, bad_batches) | "ModelDeadLetters" >> beam.Flatten()
    return BeamOutputs(results, dead)


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


class _Features:
    """Preprocessing: `(key, row)` -> `((key, row), features)`; a bad value raises, and
    RunInference's exception handling turns the row into a dead letter."""

    def __init__(self, inputs: list[str]) -> None:
        self.inputs = inputs

    def __call__(self, element: tuple[str, dict[str, Any]]) -> tuple[tuple[str, dict[str, Any]], Any]:
        return element, row_features(element[1], self.inputs)


class _ResultRow(beam.DoFn):
    def __init__(self, inputs: list[str], keep: list[str] | None) -> None:
        self.inputs = inputs
        self.keep = keep
        self.predicted = Metrics.counter(NAMESPACE, "rows_predicted")

    def process(self, element: Any) -> Iterator[dict[str, Any]]:
        (key, row), result = element
        out: dict[str, Any] = {"key": key}
        # Tensors (decoded pixels) are model inputs, not results: kept only on request.
        names = [n for n in row if not _is_tensor(row[n])] if self.keep is None else self.keep
        for name in names:
            if name not in row:
                raise InferlineError(f"keep: column {name!r} not found (columns: {', '.join(row)})")
            value = row[name]
            if isinstance(value, str) and name in self.inputs:
                value = float(result.example[self.inputs.index(name)])  # parsed as the model saw it
            if _is_tensor(value):
                value = value.reshape(-1).tolist()
            out[f"{name}_input" if name in RESULT_COLUMNS else name] = value
        out.update(result.inference)
        out["model_id"] = result.model_id
        self.predicted.inc()
        Metrics.counter(NAMESPACE, f"model_id:{result.model_id}").inc()
        yield out


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


def _feature_error(failed: Any, model_id: str) -> dict[str, Any]:
    Metrics.counter(NAMESPACE, "rows_dead").inc()
    (key, row), failure = failed
    return dead_letter(key, _raw(row), _message(failure), "features", model_id)


def _raw(row: dict[str, Any]) -> str:
    return json.dumps({k: "<tensor>" if _is_tensor(v) else v for k, v in row.items()}, default=str)


def _predict_errors(failed: Any, model_id: str) -> Iterator[dict[str, Any]]:
    # A batch the model raised on goes to dead letters whole, each row with the error.
    batch, failure = failed
    error = f"model {model_id} failed: {failure[0].__name__}: {_message(failure)}".splitlines()[0]
    for (key, row), _features in batch:
        Metrics.counter(NAMESPACE, "rows_dead").inc()
        yield dead_letter(key, _raw(row), error, "predict", model_id)


def run_beam(spec: PipelineSpec, beam_args: Sequence[str] = (), *, limit: int | None = None) -> RunSummary:
    """Translate `spec` and run it on the Beam runner named in `beam_args` (DirectRunner by default)."""
    if limit is not None:
        raise SpecError("--limit is not supported with --runner beam; run on a smaller input instead")
    check_supported(spec)
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
