"""Code around a model: user hooks (`handler: module:Class`) and label maps (`labels:`).

A hook class may define any of:

    class TopK:
        def setup(self, model): ...                       # once per loaded model version
        def preprocess(self, batch: pa.RecordBatch): ...   # -> model inputs (np.ndarray)
        def postprocess(self, batch, outputs): ...         # -> {column: values} added to results

A `preprocess`/`postprocess` that also takes a `parameters` keyword gets the request's
parameters (the v2 `parameters` object) on the server; elsewhere it gets `{}`.

`outputs` is the handler's `Prediction` (`.prediction`, `.scores`). The local engine, the
HTTP server and the Beam translation all call hooks the same way.

Example:
    >>> hooks = ModelHooks(None, labels=None, top_k=None, where="model iris")
"""

from __future__ import annotations

import csv
import inspect
import json
import threading
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from inferline.engine.steps import load_object
from inferline.errors import InferlineError, SpecError
from inferline.models.base import LoadedModel, Prediction


class HookError(InferlineError, RuntimeError):
    """A user hook raised; the engine dead-letters that batch's rows with this message."""


class ModelHooks:
    """The hook object (if any) and the label map of one model spec."""

    def __init__(self, target: str | None, *, labels: str | None, top_k: int | None, where: str) -> None:
        self.target = target
        self.labels_path = labels
        self.top_k = top_k
        self.where = where
        self._hook: Any = None
        self._labels: np.ndarray | None = None
        self._set_up: set[str] = set()
        self._lock = threading.Lock()

    def open(self) -> None:
        if self.target:
            cls = load_object(self.target, where=f"{self.where} handler")
            try:
                self._hook = cls()
            except Exception as exc:
                raise SpecError(f"{self.where}: handler {self.target} could not be created ({exc})") from None
        if self.labels_path:
            self._labels = np.asarray(read_labels(self.labels_path, where=self.where), dtype=object)
        if self.top_k is not None and self.top_k < 1:
            raise SpecError(f"{self.where}: top_k must be >= 1, got {self.top_k}")

    @property
    def active(self) -> bool:
        return self._hook is not None or self._labels is not None

    def setup(self, model: LoadedModel) -> None:
        """Call the hook's `setup(model)` once per model version (again after a swap)."""
        if self._hook is None or not hasattr(self._hook, "setup"):
            return
        with self._lock:
            if model.model_id in self._set_up:
                return
            self._call("setup", model.model)
            self._set_up.add(model.model_id)

    def preprocess(
        self, data: pa.RecordBatch, *, parameters: dict[str, Any] | None = None
    ) -> np.ndarray | None:
        """The hook's model inputs for this batch, or None to use `inputs:` as usual."""
        if self._hook is None or not hasattr(self._hook, "preprocess"):
            return None
        inputs = self._call("preprocess", data, **self._parameters("preprocess", parameters))
        return np.asarray(inputs)

    def postprocess(
        self, data: pa.RecordBatch, outputs: Prediction, *, parameters: dict[str, Any] | None = None
    ) -> dict[str, pa.Array]:
        """Extra result columns: the hook's, then `label`/`top_labels`/`top_scores`."""
        columns: dict[str, pa.Array] = {}
        if self._hook is not None and hasattr(self._hook, "postprocess"):
            returned = self._call("postprocess", data, outputs, **self._parameters("postprocess", parameters))
            columns.update(_as_columns(returned, data.num_rows, f"{self.where} handler {self.target}"))
        if self._labels is not None:
            columns.update(label_columns(self._labels, outputs, self.top_k, where=self.where))
        return columns

    def label_types(self) -> dict[str, pa.DataType]:
        """The types of the columns the label map adds (for a schema before any answer)."""
        types: dict[str, pa.DataType] = {}
        if self._labels is not None:
            types["label"] = pa.string()
            if self.top_k is not None:
                types["top_labels"] = pa.list_(pa.string())
                types["top_scores"] = pa.list_(pa.float64())
        return types

    def _parameters(self, name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
        """`{"parameters": ...}` for a hook method that takes that keyword, else nothing."""
        try:
            accepted = inspect.signature(getattr(self._hook, name)).parameters
        except (TypeError, ValueError):
            return {}
        takes = "parameters" in accepted or any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        return {"parameters": parameters or {}} if takes else {}

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._hook, name)(*args, **kwargs)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise HookError(f"{self.where}: hook {self.target}.{name} failed: {message}") from exc


def read_labels(path: str, *, where: str) -> list[str]:
    """Labels from a text file (one per line), a CSV of `index,label`, or a JSON list or
    `{"index": label}` map (TorchServe's `index_to_name.json`; `[id, label]` values give label)."""
    try:
        with fsspec.open(path, "r", encoding="utf-8") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
    except FileNotFoundError:
        raise SpecError(f"{where}: labels file {path} not found") from None
    if path.lower().endswith(".json"):
        return _json_labels("\n".join(lines), path, where)
    lines = [line for line in lines if line.strip()]
    rows = list(csv.reader(lines))
    if rows and all(len(r) == 2 for r in rows):
        start = 1 if not rows[0][0].strip().lstrip("-").isdigit() else 0  # optional header
        try:
            pairs = {int(i): label for i, label in rows[start:]}
        except ValueError:
            raise SpecError(f"{where}: labels CSV {path}: expected index,label rows") from None
        size = max(pairs) + 1 if pairs else 0
        return [pairs.get(i, str(i)) for i in range(size)]
    return lines


def _json_labels(text: str, path: str, where: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"{where}: labels file {path} is not valid JSON ({exc})") from None
    if isinstance(data, dict):
        try:
            pairs = {int(index): value for index, value in data.items()}
        except ValueError:
            raise SpecError(
                f'{where}: labels JSON {path}: expected class indexes as keys, like {{"0": "cat"}}'
            ) from None
        data = [pairs.get(i, str(i)) for i in range(max(pairs) + 1 if pairs else 0)]
    if not isinstance(data, list):
        raise SpecError(f"{where}: labels JSON {path}: expected a list or an index -> label object")
    return [str(v[-1]) if isinstance(v, list) and v else str(v) for v in data]


def label_columns(
    labels: np.ndarray, outputs: Prediction, top_k: int | None, *, where: str
) -> dict[str, pa.Array]:
    columns: dict[str, pa.Array] = {}
    prediction = np.asarray(outputs.prediction)
    if prediction.ndim == 1 and np.issubdtype(prediction.dtype, np.integer):
        if len(prediction) and (prediction.min() < 0 or prediction.max() >= len(labels)):
            raise HookError(
                f"{where}: prediction {int(prediction.max())} has no label ({len(labels)} labels in the file)"
            )
        columns["label"] = pa.array(labels[prediction].tolist(), type=pa.string())
    if top_k is not None:
        if outputs.scores is None:
            raise HookError(f"{where}: top_k needs a model with scores (probabilities)")
        scores = np.asarray(outputs.scores, dtype=np.float64)
        k = min(top_k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        offsets = pa.array(np.arange(0, (len(scores) + 1) * k, k, dtype=np.int32))
        top_labels = labels[order].reshape(-1).tolist() if k else []
        columns["top_labels"] = pa.ListArray.from_arrays(offsets, pa.array(top_labels, type=pa.string()))
        columns["top_scores"] = pa.ListArray.from_arrays(
            offsets, pa.array(np.take_along_axis(scores, order, 1).reshape(-1))
        )
    return columns


def _as_columns(value: Any, n: int, where: str) -> dict[str, pa.Array]:
    if value is None:
        return {}
    if isinstance(value, pa.RecordBatch | pa.Table):
        value = {name: value.column(name) for name in value.schema.names}
    if not isinstance(value, dict):
        raise HookError(f"{where}: postprocess returned {type(value).__name__}, expected a dict of columns")
    columns: dict[str, pa.Array] = {}
    for name, column in value.items():
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        elif not isinstance(column, pa.Array):
            array = np.asarray(column)
            column = pa.array(array.tolist() if array.ndim > 1 or array.dtype == object else array)
        if len(column) != n:
            raise HookError(f"{where}: postprocess column {name!r} has {len(column)} rows, expected {n}")
        columns[str(name)] = column
    return columns
