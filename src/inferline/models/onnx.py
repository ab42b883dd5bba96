"""ONNX models on onnxruntime (CPU by default; CUDA when `device: cuda` and available)."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout


class OnnxHandler:
    """Runs an ONNX graph: first output is the prediction, a second one the scores.

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

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        first = model.get_inputs()[0]
        dtype = np.float64 if first.type == "tensor(double)" else np.float32
        outputs = model.run(None, {first.name: standard_layout(inputs, dtype)})
        prediction = np.asarray(outputs[0])
        scores = None
        if self.scores and len(outputs) > 1:
            scores = _as_matrix(outputs[1])
        return Prediction(prediction=prediction, scores=scores)


def _as_matrix(value: Any) -> np.ndarray:
    # skl2onnx's ZipMap gives a list of {label: prob} dicts; everything else is a tensor.
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value, dtype=np.float64)
