"""ONNX models on onnxruntime (CPU by default; CUDA when `device: cuda` and available).

A graph with several inputs (scikit-learn exported with one `FloatTensorType([None, 1])`
per column, as Google's skl2onnx tutorial does) is fed one column per input: its input
names are the model's default `inputs`, so pipelines, SQL and the server pick the columns
of the same names. String inputs (`StringTensorType`) get the column's text. A graph whose
batch dimension is a number (a PyTorch export traced with batch 1) runs in slices of that
size, the last one padded.

Example:
    >>> handler = OnnxHandler()
    >>> session = handler.load("examples/iris/models/iris-1.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.errors import InputError, ModelError, require
from inferline.models.base import Prediction
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import as_outputs

# ONNX tensor types -> the numpy dtype fed to them (float types otherwise get float32).
DTYPES: dict[str, Any] = {
    "tensor(double)": np.float64,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.str_,
}


class OnnxHandler:
    """Runs an ONNX graph: a classifier's label and scores, else each output by name.

    Example:
        >>> handler = OnnxHandler()
        >>> session = handler.load("examples/iris/models/iris-1.onnx")  # doctest: +SKIP
    """

    framework = "onnx"

    def __init__(self, *, batch_size: int | None = None, device: str = "cpu", scores: bool = True) -> None:
        self.batch_size = batch_size
        self.device = device
        self.scores = scores

    def load(self, uri: str) -> Any:
        ort: Any = require("onnxruntime", "onnx")
        providers = ["CPUExecutionProvider"]
        if self.device in ("cuda", "auto"):
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" in available:
                providers.insert(0, "CUDAExecutionProvider")
            elif self.device == "cuda":
                raise ModelError(
                    f"model {uri}: device cuda requested but onnxruntime has no CUDA provider "
                    "(install onnxruntime-gpu on a machine with a GPU, or use device: cpu)"
                )
        with local_copy(uri) as path:
            try:
                return ort.InferenceSession(path, providers=providers)
            except Exception as exc:
                raise ModelError(f"model {uri}: cannot load ONNX model ({exc})") from exc

    def input_names(self, model: Any) -> list[str]:
        """A graph with several inputs takes one column each, by name; one input takes them all."""
        graph_inputs = model.get_inputs()
        return [i.name for i in graph_inputs] if len(graph_inputs) > 1 else []

    def text_inputs(self, model: Any) -> list[str]:
        """The inputs that take strings (fed the column's text instead of numbers)."""
        return [i.name for i in model.get_inputs() if i.type == "tensor(string)"]

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        graph_inputs = model.get_inputs()
        batch = fixed_batch(graph_inputs)
        n = len(inputs)
        if batch is None or batch == n:
            outputs = model.run(None, feeds(graph_inputs, inputs))
        else:
            parts = [
                model.run(None, feeds(graph_inputs, _padded(inputs[i : i + batch], batch)))
                for i in range(0, n, batch)
            ]
            outputs = [_joined([p[k] for p in parts], n) for k in range(len(parts[0]))] if parts else []
        graph_outputs = model.get_outputs()
        if len(outputs) > 1 and not is_classifier(graph_outputs):
            return as_outputs({o.name: np.asarray(v) for o, v in zip(graph_outputs, outputs, strict=True)})
        prediction = np.asarray(outputs[0])
        scores = None
        if self.scores and len(outputs) > 1:
            scores = _as_matrix(outputs[1])
        return Prediction(prediction=prediction, scores=scores)


def is_classifier(graph_outputs: list[Any]) -> bool:
    """A label then its probabilities, as skl2onnx/onnxmltools export classifiers: two outputs,
    the first integer or text labels (or named *label*), or the second a ZipMap or named *prob*.
    Other graphs with several outputs give each output under its name."""
    if len(graph_outputs) != 2:
        return False
    label, probabilities = graph_outputs
    return (
        label.type in ("tensor(int64)", "tensor(int32)", "tensor(string)")
        or "label" in label.name.lower()
        or str(probabilities.type).startswith("seq(")
        or "prob" in probabilities.name.lower()
    )


def fixed_batch(graph_inputs: list[Any]) -> int | None:
    """The batch size the graph was exported with, when its first axis is a number > 1 or 1."""
    shape = graph_inputs[0].shape if graph_inputs else None
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return int(shape[0])
    return None


def feeds(graph_inputs: list[Any], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's feeds: the whole batch for one input, else column j for input j."""
    if len(graph_inputs) == 1:
        return {graph_inputs[0].name: _typed(graph_inputs[0], inputs)}
    columns = inputs.reshape(len(inputs), -1) if inputs.ndim != 2 else inputs
    if columns.shape[1] != len(graph_inputs):
        names = ", ".join(i.name for i in graph_inputs)
        raise InputError(
            f"the model takes {len(graph_inputs)} inputs ({names}), one column each, "
            f"but got {columns.shape[1]} columns; set inputs: to those column names"
        )
    out = {}
    for j, spec in enumerate(graph_inputs):
        column = columns[:, j]
        rank = len(spec.shape) if spec.shape is not None else 2
        out[spec.name] = _typed(spec, column.reshape(len(column), 1) if rank == 2 else column)
    return out


def _typed(spec: Any, values: np.ndarray) -> np.ndarray:
    dtype = DTYPES.get(spec.type, np.float32)
    if dtype is np.str_:
        return np.asarray([str(v) for v in values.reshape(-1)], dtype=object).reshape(values.shape)
    if values.dtype == object:
        values = values.astype(np.float64)
    return standard_layout(values, dtype)


def _padded(part: np.ndarray, size: int) -> np.ndarray:
    # A short last slice is filled up with copies of its last row; those outputs are dropped.
    if len(part) == size:
        return part
    return np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])


def _joined(parts: list[Any], n: int) -> Any:
    if isinstance(parts[0], list):
        return [row for part in parts for row in part][:n]
    return np.concatenate([np.asarray(p) for p in parts])[:n]


def _as_matrix(value: Any) -> np.ndarray:
    # skl2onnx's ZipMap gives a list of {label: prob} dicts; everything else is a tensor.
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value, dtype=np.float64)
