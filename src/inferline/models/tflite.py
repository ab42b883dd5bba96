"""TensorFlow Lite `.tflite` files on LiteRT (`ai-edge-litert`: no TensorFlow needed).

A flatbuffer holds no code. The interpreter is resized to each batch's size when the
model's batch dimension is free (`shape_signature` -1), else the batch runs in slices of
the model's fixed size, the last one padded. One input takes the whole batch; several take
one column each, by name. Outputs go through `outputs.from_named_outputs` as for SavedModels.
An interpreter is not thread-safe: calls on one model are serialised.

Example:
    >>> handler = TFLiteHandler()
    >>> interpreter = handler.load("models/mobilenet.tflite")  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferline.errors import InputError, ModelError, require
from inferline.models.base import Prediction
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import check_output_mode, from_named_outputs, select_outputs


@dataclass
class TFLiteModel:
    interpreter: Any
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    fixed_batch: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    batch: int | None = None  # the batch size the tensors are allocated for


class TFLiteHandler:
    """Runs a `.tflite` model with LiteRT's interpreter on whole batches.

    Example:
        >>> TFLiteHandler().framework
        'tflite'
    """

    framework = "tflite"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        scores: bool = True,
        output: str | None = None,
        threads: int | None = None,
        named_outputs: list[str] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.scores = scores
        self.output = output
        self.threads = threads
        # The spec's `outputs:`: only these signature outputs, in this order.
        self.named_outputs = named_outputs
        self.parallel_batches = 1

    def load(self, uri: str) -> TFLiteModel:
        litert: Any = require("ai_edge_litert.interpreter", "tflite")
        check_output_mode(self.output, where=f"model {uri}")
        with local_copy(uri) as path:
            with open(path, "rb") as handle:
                content = handle.read()
        try:
            interpreter = litert.Interpreter(model_content=content, num_threads=self.threads)
            interpreter.allocate_tensors()
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            raise ModelError(f"model {uri}: cannot load TFLite model ({reason})") from exc
        inputs, outputs = _signature_details(interpreter)
        if self.named_outputs:  # a name the model does not give fails here, not per batch
            select_outputs({_name(d): np.empty(0) for d in outputs}, self.named_outputs, where=f"model {uri}")
        signature = inputs[0].get("shape_signature", inputs[0]["shape"]) if inputs else []
        fixed = int(signature[0]) if len(signature) and int(signature[0]) > 0 else None
        return TFLiteModel(
            interpreter, inputs, outputs, fixed, batch=int(inputs[0]["shape"][0]) if inputs else None
        )

    def input_names(self, model: TFLiteModel) -> list[str]:
        return [_name(d) for d in model.inputs] if len(model.inputs) > 1 else []

    def output_names(self, model: TFLiteModel) -> list[str]:
        """The signature's output names, in the interpreter's order."""
        return self.named_outputs or [_name(d) for d in model.outputs]

    def predict(self, model: TFLiteModel, inputs: np.ndarray) -> Prediction:
        n = len(inputs)
        size = model.fixed_batch or n
        with model.lock:
            parts = (
                [self._run(model, _padded(inputs[i : i + size], size)) for i in range(0, n, size)]
                if n
                else []
            )
        if not parts:
            return Prediction(prediction=np.empty((0,)))
        names = [_name(d) for d in model.outputs]
        outputs = {
            name: parts[0][k] if len(parts) == 1 else np.concatenate([p[k] for p in parts])[:n]
            for k, name in enumerate(names)
        }
        return from_named_outputs(
            outputs, output=self.output, scores=self.scores, selected=self.named_outputs, where="model"
        )

    def _run(self, model: TFLiteModel, batch: np.ndarray) -> list[np.ndarray]:
        interpreter = model.interpreter
        feeds = _split(model.inputs, batch)
        if model.fixed_batch is None and model.batch != len(batch):
            for detail, value in zip(model.inputs, feeds, strict=True):
                interpreter.resize_tensor_input(detail["index"], list(value.shape))
            interpreter.allocate_tensors()
            model.batch = len(batch)
        for detail, value in zip(model.inputs, feeds, strict=True):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        # get_tensor returns a copy: the next invoke does not overwrite it.
        return [interpreter.get_tensor(d["index"]) for d in model.outputs]


def _signature_details(interpreter: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output details named as the model's (first) signature names them."""
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["index"])
    outputs = sorted(interpreter.get_output_details(), key=lambda d: d["index"])
    signatures = interpreter.get_signature_list()
    if not signatures:
        return inputs, outputs
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    names = {d["index"]: n for n, d in runner.get_input_details().items()}
    names.update({d["index"]: n for n, d in runner.get_output_details().items()})
    rename = [inputs, outputs]
    for details in rename:
        for detail in details:
            detail["name"] = names.get(detail["index"], detail["name"])
    return inputs, outputs


def _name(detail: dict[str, Any]) -> str:
    # Converted models name tensors like "serving_default_image:0"; keep the readable part.
    name = str(detail["name"]).removeprefix("serving_default_").removeprefix("StatefulPartitionedCall:")
    return name.split(":")[0] or str(detail["index"])


def _split(details: list[dict[str, Any]], batch: np.ndarray) -> list[np.ndarray]:
    if len(details) == 1:
        return [standard_layout(batch, details[0]["dtype"])]
    columns = batch.reshape(len(batch), -1) if batch.ndim != 2 else batch
    if columns.shape[1] != len(details):
        names = ", ".join(_name(d) for d in details)
        raise InputError(
            f"the model takes {len(details)} inputs ({names}), one column each, "
            f"but got {columns.shape[1]} columns; set inputs: to those column names"
        )
    parts = []
    for j, detail in enumerate(details):
        column = columns[:, j].astype(np.float64) if columns.dtype == object else columns[:, j]
        shape = (len(column), 1) if len(detail["shape"]) == 2 else (len(column),)
        parts.append(standard_layout(column.reshape(shape), detail["dtype"]))
    return parts


def _padded(part: np.ndarray, size: int) -> np.ndarray:
    if len(part) == size:
        return part
    return np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
