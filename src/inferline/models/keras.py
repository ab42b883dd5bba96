"""Keras 3 models (`.keras`, legacy `.h5`) on the torch backend: no TensorFlow needed.

`KERAS_BACKEND` is set to `torch` before keras is first imported, unless the user chose
another backend. Outputs go through the same rules as torch models (`models/outputs.py`): a
model whose last layer is a softmax is a classifier (its output is `scores` as is, its argmax
the `prediction`); any other model's output comes back raw unless the spec says `output: classes`.

Example:
    >>> handler = KerasHandler()
    >>> model = handler.load("models/digits.keras")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import check_output_mode, classify, several
from inferline.models.torch import pick_device


def keras_module() -> Any:
    """keras, imported on the torch backend (unless KERAS_BACKEND says otherwise)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return require("keras", "keras")


class KerasHandler:
    """Runs a saved Keras model on whole batches with `predict_on_batch`.

    Example:
        >>> KerasHandler(device="cpu").framework
        'keras'
    """

    framework = "keras"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        device: str = "cpu",
        scores: bool = True,
        output: str | None = None,
        named_outputs: list[str] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.scores = scores
        self.output = output
        self.named_outputs = named_outputs
        self._device: str | None = None

    def load(self, uri: str) -> Any:
        keras = keras_module()
        check_output_mode(self.output, where=f"model {uri}")
        if keras.backend.backend() == "torch":
            # Weights and every batch stay on the chosen device (keras alone picks CUDA
            # whenever it is there, even for device: cpu).
            self._device = pick_device(require("torch", "keras"), self.device, uri)
        with local_copy(uri) as path, self._scope(keras):
            try:
                # safe_mode refuses Lambda layers' pickled bytecode in .keras files.
                model = keras.saving.load_model(path, compile=False, safe_mode=True)
            except Exception as exc:
                lines = str(exc).strip().splitlines()
                reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
                raise ModelError(f"model {uri}: cannot load Keras model ({reason})") from exc
        return model

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        keras = keras_module()
        dtype = np.float32 if inputs.dtype == np.float64 else inputs.dtype
        with self._scope(keras):
            output = model.predict_on_batch(standard_layout(inputs, dtype))
        # Asked per batch (microseconds next to the forward pass), so any handler can run any model.
        classifier = ends_in_softmax(model)
        declared = self.output in ("classes", "argmax") or (classifier and self.output != "raw")
        if isinstance(output, dict):
            names = [str(k) for k in output]
            output = list(output.values())
        else:
            names = [str(n) for n in getattr(model, "output_names", None) or []]
        if isinstance(output, (list, tuple)):
            if len(output) > 1:
                each = [np.asarray(keras.ops.convert_to_numpy(o)) for o in output]
                own = names if len(names) == len(each) else None
                # A classifier classifies its first output; the others come back under their names.
                first = (
                    classify(each[0], output=self.output, scores=self.scores, classifier=classifier)
                    if declared
                    else None
                )
                return several(each, self.named_outputs or own, where=f"model {model.name}", classified=first)
            output = output[0]
        values = np.asarray(keras.ops.convert_to_numpy(output))
        return classify(values, output=self.output, scores=self.scores, classifier=classifier)

    def _scope(self, keras: Any) -> AbstractContextManager[Any]:
        return keras.device(self._device) if self._device is not None else nullcontext()


def ends_in_softmax(model: Any) -> bool:
    """Whether the last layer is a softmax: a `Softmax` layer, or any layer (`Dense`,
    `Activation`) whose activation is softmax/log_softmax."""
    layers = getattr(model, "layers", None) or [model]
    last = layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") in ("softmax", "log_softmax")
