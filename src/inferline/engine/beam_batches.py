"""The Beam engine's per-batch work: `RunInference`'s handler and the DoFns around it.

Each batch of `(key, row)` elements becomes one Arrow batch (`rows_to_batch`) and goes
through the local engine's `BatchProcessor`; `Emit` turns the resulting `Processed` batch
into result rows (split into sides with `split:`) and dead letters. `engine/beam.py` wires
them into a pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.beam_import import import_run_inference
from inferline.errors import InferlineError, SpecError, require

require("apache_beam", "beam")
import_run_inference()

import apache_beam as beam  # noqa: E402
from apache_beam.metrics.metric import Metrics  # noqa: E402
from apache_beam.ml.inference.base import ModelHandler as BeamModelHandler  # noqa: E402
from apache_beam.ml.inference.base import PredictionResult  # noqa: E402

from inferline.beam import ModelHandler  # noqa: E402
from inferline.engine.beam_files import file_rows  # noqa: E402
from inferline.engine.beam_io import DEAD, NAMESPACE, Row, dead_letter  # noqa: E402
from inferline.engine.process import BatchProcessor  # noqa: E402
from inferline.engine.tensors import tensor_column  # noqa: E402
from inferline.io.base import DeadLetter, SourceBatch  # noqa: E402
from inferline.io.loaders import ImageLoader, make_loader  # noqa: E402
from inferline.io.split import split_fractions, split_parts  # noqa: E402
from inferline.models.base import LoadedModel  # noqa: E402
from inferline.pipeline import FILE_SINK_KINDS, PipelineSpec  # noqa: E402


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


class SpecHandler(BeamModelHandler[tuple[str, Row], PredictionResult, list[LoadedModel]]):
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


class ProcessBatch(beam.DoFn):
    """A pipeline without a model: each batch of `(key, row)` through the spec's steps."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.stage = _Stage(spec)

    def process(self, batch: list[tuple[str, Row]]) -> Iterator[Processed]:
        yield self.stage.run(batch, [])


class Emit(beam.DoFn):
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


def failed_batch(failed: Any, model_id: str) -> Iterator[Row]:
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
