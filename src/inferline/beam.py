"""`inferline.beam.ModelHandler`: inferline's model handlers inside Beam's `RunInference`.

RunInference brings batching, one shared model per worker process, model refresh through
a side input and Beam's metrics; inferline brings the framework detection, the safe model
loading and `model_id = name/version`. Use it in your own Beam code:

    >>> import apache_beam as beam  # doctest: +SKIP
    >>> from apache_beam.ml.inference.base import RunInference  # doctest: +SKIP
    >>> from inferline.beam import ModelHandler  # doctest: +SKIP
    >>> rows | RunInference(ModelHandler("models/iris-*.onnx", inputs=["a", "b"]))  # doctest: +SKIP

Each output is a `PredictionResult(example, inference, model_id)` whose `inference` is
`{"prediction": value}` plus `"scores": [floats]` when the model has them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from inferline.beam_import import import_run_inference
from inferline.errors import InputError, MissingExtraError

try:
    from apache_beam import PTransform as _beam_ptransform

    import_run_inference()
    from apache_beam.ml.inference import base as _beam_base
except ImportError as _exc:  # pragma: no cover - exercised without apache-beam installed
    raise MissingExtraError("apache_beam", "beam") from _exc

from inferline.models.base import LoadedModel
from inferline.pipeline import BatchSpec, ModelSpec

if TYPE_CHECKING:
    from apache_beam.ml.inference.base import PredictionResult

__all__ = ["ModelHandler", "RunSpec", "row_features"]


class ModelHandler(_beam_base.ModelHandler[Any, Any, LoadedModel]):
    """A Beam `ModelHandler` that loads any model inferline can (sklearn, ONNX, torch, keras).

    `uri_or_glob` is a file or glob; the newest match is loaded (`iris-3.onnx` is version 3).
    Or `store=` a model store folder and `name=` a model in it: its pinned or newest version.
    Examples may be feature vectors (numpy arrays or lists of numbers) or dict rows, from
    which `inputs` names the fields (one list-valued field, or several scalar ones).

    Example:
        >>> handler = ModelHandler("models/iris-*.joblib", inputs=["a", "b"], max_batch_size=512)
        >>> handler.batch_elements_kwargs()["max_batch_size"]
        512
    """

    def __init__(
        self,
        uri_or_glob: str | None = None,
        *,
        store: str | None = None,
        framework: str | None = None,
        inputs: Sequence[str] | str | None = None,
        name: str | None = None,
        scores: bool = True,
        device: str = "cpu",
        version: str | None = None,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_wait_ms: float | None = None,
        large_model: bool = False,
        model_copies: int | None = None,
    ) -> None:
        wait_secs = None if max_wait_ms is None else max(1, int(round(max_wait_ms / 1000)))
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=wait_secs,
            large_model=large_model,
            model_copies=model_copies,
        )
        if not (uri_or_glob or (store and name)):
            raise InputError("ModelHandler needs a model file or glob, or store= and name= of a stored model")
        self.spec = ModelSpec(
            name=name or _name_from(uri_or_glob or ""),
            uri=uri_or_glob,
            store=store,
            framework=framework,
            inputs=inputs if inputs is None or isinstance(inputs, str) else list(inputs),
            scores=scores,
            device=device,
            version=version,
        )
        self._override_uri: str | None = None

    @classmethod
    def from_spec(
        cls,
        model: ModelSpec,
        batch: BatchSpec | None = None,
        *,
        streaming: bool = False,
        timed_batches: bool | None = None,
    ) -> Self:
        """The handler for a pipeline spec's `model:`, batching as its `batch:` says.

        Bounded input gets `max_size` batches (a bundle's tail may be smaller). Streams take
        any batch from 1 to `max_size` rows, closed after `max_wait_ms` when `timed_batches`
        (the default for streams): Beam rounds that up to whole seconds, and its time-based
        batching is a stateful DoFn, so it is never used for bounded input.
        """
        batch = batch or BatchSpec()
        timed = streaming if timed_batches is None else timed_batches
        handler = cls(
            model.uri,
            store=model.store,
            name=model.name,
            min_batch_size=1 if streaming else batch.max_size,
            max_batch_size=batch.max_size,
            max_wait_ms=batch.max_wait_ms if timed else None,
        )
        handler.spec = model.model_copy()  # a store:, pinned version: and the rest come along
        return handler

    # --- Beam's ModelHandler API -------------------------------------------------------
    def load_model(self) -> LoadedModel:
        from inferline.models.registry import load_model, load_version, version_of

        if self._override_uri:
            uri = self._override_uri
            return load_version(self.spec, uri, version_of(uri))
        return load_model(self.spec)

    def update_model_path(self, model_path: str | None = None) -> None:
        """Called by RunInference when `WatchFilePattern` (or any metadata side input) sees a
        new file; an empty path keeps the newest match of the glob."""
        self._override_uri = model_path or None

    def run_inference(
        self,
        batch: Sequence[Any],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        inputs = model.inputs or self.spec.input_columns
        matrix = self._matrix(batch, inputs, model.text_inputs, model.allow_missing)
        prediction = model.predict(matrix)
        values = prediction.prediction
        if len(values) != len(batch):
            raise InputError(
                f"model {model.model_id}: returned {len(values)} predictions for {len(batch)} rows"
            )
        model_id = model.model_id
        if prediction.outputs is not None:  # several outputs: a field per output
            return [
                _beam_base.PredictionResult(example, inference, model_id)
                for example, inference in zip(batch, prediction.instances(), strict=True)
            ]
        labels = _as_python(values)
        scores = None
        if prediction.scores is not None:
            scores = np.asarray(prediction.scores, dtype=np.float64).reshape(len(batch), -1).tolist()
        out = []
        for i, example in enumerate(batch):
            inference: dict[str, Any] = {"prediction": labels[i]}
            if scores is not None:
                inference["scores"] = scores[i]
            out.append(_beam_base.PredictionResult(example, inference, model_id))
        return out

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        # Beam's default pickles the whole batch just to measure it.
        return int(sum(getattr(e, "nbytes", 8 * len(e) if hasattr(e, "__len__") else 8) for e in batch))

    def get_metrics_namespace(self) -> str:
        return f"inferline_{self.spec.name}"

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return dict(super().batch_elements_kwargs())

    def __repr__(self) -> str:
        return f"inferline.beam.ModelHandler({self.spec.uri!r}, name={self.spec.name!r})"

    # --- helpers ---------------------------------------------------------------------------
    def _matrix(
        self, batch: Sequence[Any], inputs: list[str], text: list[str], missing: bool = False
    ) -> np.ndarray:
        if not batch:
            return np.empty((0, 0))
        if isinstance(batch[0], Mapping) and text:
            return _text_matrix(batch, inputs, set(text), missing)
        if isinstance(batch[0], Mapping):
            vectors = [row_features(row, inputs, missing=missing) for row in batch]
        else:
            vectors = [_as_example(e) for e in batch]
        shapes = {v.shape for v in vectors}
        if len(shapes) > 1:
            sizes = sorted(str(list(s)) if len(s) > 1 else str(s[0]) for s in shapes)
            raise InputError(
                f"model {self.spec.name}: examples of different shapes {', '.join(sizes)} in one batch; "
                "expected the same number of features in every row (images: set source.resize)"
            )
        return np.stack(vectors)


class RunSpec(_beam_ptransform[Any, Any]):
    """A whole inferline pipeline spec's processing as one Beam transform, for your own pipelines.

    Input: `(key, row dict)` elements; output: a dict of PCollections, `"results"` (result rows
    as `inferline run` writes them: key, kept columns, prediction, scores, model_id, hook and
    label columns, `output:` mapping) and `"dead"` (dead-letter rows), plus one per side of a
    `split:` sink. The spec's source and sink are not used: you bring the rows and write the
    results. `spec` is a path to a YAML spec, or a parsed `PipelineSpec`.

    Example:
        >>> outputs = rows | RunSpec("pipeline.yaml")  # doctest: +SKIP
        >>> outputs["results"] | beam.io.WriteToText("out")  # doctest: +SKIP
    """

    def __init__(self, spec: Any, *, streaming: bool = False) -> None:
        super().__init__()
        from inferline.pipeline import PipelineSpec, load_spec

        self.spec = spec if isinstance(spec, PipelineSpec) else load_spec(str(spec))
        self.streaming = streaming

    def expand(self, rows: Any) -> dict[str, Any]:
        from inferline.engine.beam import process_rows

        outputs = process_rows(rows, self.spec, streaming=self.streaming)
        return {"results": outputs.results, "dead": outputs.dead, **outputs.sides}


def row_features(row: Mapping[str, Any], inputs: Sequence[str], *, missing: bool = False) -> np.ndarray:
    """One dict row -> a float64 feature vector, with the local engine's error messages; with
    `missing` (a model that imputes) an empty field is NaN.

    Example:
        >>> row_features({"a": "1.5", "b": 2}, ["a", "b"]).tolist()
        [1.5, 2.0]
    """
    tensor = _tensor(row, inputs)
    if tensor is not None:
        return tensor
    names = list(inputs) or [k for k, v in row.items() if isinstance(v, (int, float, bool))]
    if not names:
        raise InputError("input: no numeric fields to use as model inputs; set inputs:")
    values: list[float] = []
    for name in names:
        value = _field(row, name)
        if len(names) == 1 and isinstance(value, (list, tuple, np.ndarray)):
            try:
                return np.asarray(value, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"field {name!r} holds a value that is not a number") from None
        if value is None or value == "":
            if missing:
                values.append(np.nan)
                continue
            raise InputError(f"field {name!r} is empty, expected a number")
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            raise InputError(f"field {name!r}: {value!r} is not a number") from None
    return np.asarray(values, dtype=np.float64)


def _text_matrix(
    rows: Sequence[Mapping[str, Any]], inputs: list[str], text: set[str], missing: bool = False
) -> np.ndarray:
    # A model with text inputs (a Hugging Face text model, an ONNX string input) gets an object
    # matrix as from the local engine: strings for its text columns, numbers for the others.
    matrix = np.empty((len(rows), len(inputs)), dtype=object)
    for i, row in enumerate(rows):
        for j, name in enumerate(inputs):
            value = _field(row, name)
            if name not in text:
                matrix[i, j] = row_features({name: value}, [name], missing=missing)[0]
            elif value is None and not missing:
                raise InputError(f"field {name!r} is empty, expected text")
            else:
                matrix[i, j] = value if isinstance(value, str) or value is None else str(value)
    return matrix


def _tensor(row: Mapping[str, Any], inputs: Sequence[str]) -> np.ndarray | None:
    # A decoded image (any numpy array of 2+ dimensions) is the model input as it is, in its
    # own dtype and shape, as the local engine feeds tensor columns; with no inputs: the
    # row's only array is used.
    names = list(inputs) if len(inputs) == 1 else [] if inputs else list(row)
    found = [row[n] for n in names if isinstance(row.get(n), np.ndarray) and row[n].ndim >= 2]
    return found[0] if len(found) == 1 else None


def _as_example(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim >= 2 or array.dtype == np.float32:
        return array
    return np.asarray(array, dtype=np.float64).reshape(-1)


def _field(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    node: Any = row
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            have = ", ".join(map(str, row))
            raise InputError(f"input column {name!r} not found (columns: {have})")
        node = node[part]
    return node


def _as_python(values: np.ndarray) -> list[Any]:
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    return list(values.tolist())


def _name_from(uri: str) -> str:
    import os
    import re

    stem = os.path.basename(uri.rstrip("/")).split(".")[0]
    stem = re.sub(r"[-_]?(\*|\d+)$", "", stem)
    return stem or "model"
