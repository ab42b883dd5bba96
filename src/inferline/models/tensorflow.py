"""TensorFlow SavedModel folders (`saved_model.pb` + `variables/`), as BigQuery ML imports them.

The folder (local or any fsspec URI) is loaded with `tf.saved_model.load`, which runs no
Python code from the folder. A signature is called: `serving_default` unless `signature:`
names another. A signature with one input takes the whole batch (images NHWC, features
(n, k)); with several, each input takes the column of its name (`inputs:` may map names),
string inputs the column's text. Outputs go through `outputs.from_named_outputs`: a
probability map makes a classifier, anything else comes back raw (several outputs: one column
each, sorted by name).

TensorFlow imports Keras; `KERAS_BACKEND` is set to `torch` first (unless the user chose),
so `.keras` files keep running on torch in the same process. Unless tf_keras is installed,
`TF_USE_LEGACY_KERAS=1` (unless set) keeps TensorFlow from importing Keras at all: loading a
SavedModel needs none of it, and the import cost ~4.5 s CPU of ~7 s.

Example:
    >>> handler = TensorFlowHandler(signature="serving_default")
    >>> model = handler.load("models/resnet50/")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.errors import InputError, ModelError, require
from inferline.models.base import Prediction
from inferline.models.files import local_folder
from inferline.models.layout import standard_layout
from inferline.models.outputs import check_output_mode, from_named_outputs, select_outputs


def tensorflow_module() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner about CPU instructions per process
    if importlib.util.find_spec("tf_keras") is None:
        # `import tensorflow` imports Keras 3 for tf.keras, and Keras its backend (torch): ~4.5 s
        # CPU of a ~7 s import. tf.saved_model.load needs no Keras; with this flag and no tf_keras
        # installed, TensorFlow leaves Keras unimported (tf.keras raises ImportError if touched).
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    return require("tensorflow", "tensorflow")


@dataclass
class SignatureInput:
    name: str
    dtype: Any  # numpy dtype, or np.str_ for tf.string
    rank: int | None


@dataclass
class TensorFlowModel:
    """A loaded SavedModel (kept alive: the signature needs its variables) and one signature."""

    saved: Any
    function: Any
    inputs: list[SignatureInput]
    device: str


class TensorFlowHandler:
    """Calls a SavedModel signature on whole batches.

    Example:
        >>> TensorFlowHandler().framework
        'tensorflow'
    """

    framework = "tensorflow"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        device: str = "cpu",
        scores: bool = True,
        output: str | None = None,
        signature: str | None = None,
        named_outputs: list[str] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.scores = scores
        self.output = output
        self.signature = signature or "serving_default"
        # The spec's `outputs:`: only these signature outputs, in this order.
        self.named_outputs = named_outputs
        # TensorFlow runs one call on all cores.
        self.parallel_batches = 1

    def load(self, uri: str) -> TensorFlowModel:
        tf = tensorflow_module()
        check_output_mode(self.output, where=f"model {uri}")
        device = _device(tf, self.device, uri)
        with local_folder(uri) as path:
            if not os.path.exists(os.path.join(path, "saved_model.pb")):
                raise ModelError(f"model {uri}: not a SavedModel folder (no saved_model.pb)")
            try:
                with tf.device(device):
                    saved = tf.saved_model.load(path)
            except Exception as exc:
                lines = str(exc).strip().splitlines()
                reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
                raise ModelError(f"model {uri}: cannot load SavedModel ({reason})") from exc
        signatures = dict(getattr(saved, "signatures", {}) or {})
        if self.signature not in signatures:
            known = ", ".join(sorted(signatures)) or "none"
            raise ModelError(
                f"model {uri}: SavedModel has no signature {self.signature!r} (it has: {known}); "
                "set signature: to one of them"
            )
        function = signatures[self.signature]
        _, kwargs = function.structured_input_signature
        inputs = [
            SignatureInput(
                name,
                np.str_ if spec.dtype == tf.string else spec.dtype.as_numpy_dtype,
                spec.shape.rank,
            )
            for name, spec in sorted(kwargs.items())
        ]
        if self.named_outputs:  # a name the signature does not give fails here, not per batch
            outputs = {str(name): np.empty(0) for name in function.structured_outputs}
            select_outputs(outputs, self.named_outputs, where=f"model {uri}")
        return TensorFlowModel(saved, function, inputs, device)

    def input_names(self, model: TensorFlowModel) -> list[str]:
        """Several signature inputs take one column each, by name."""
        return [i.name for i in model.inputs] if len(model.inputs) > 1 else []

    def text_inputs(self, model: TensorFlowModel) -> list[str]:
        return [i.name for i in model.inputs if i.dtype is np.str_]

    def output_names(self, model: TensorFlowModel) -> list[str]:
        """The signature's output names, sorted (a loaded signature's own order is a protobuf
        map's, which varies)."""
        return self.named_outputs or sorted(str(name) for name in model.function.structured_outputs)

    def predict(self, model: TensorFlowModel, inputs: np.ndarray) -> Prediction:
        tf = tensorflow_module()
        feeds = {
            i.name: tf.constant(v) for i, v in zip(model.inputs, _split(model.inputs, inputs), strict=True)
        }
        with tf.device(model.device):
            result = model.function(**feeds)
        outputs = {name: np.asarray(result[name]) for name in sorted(result)}
        return from_named_outputs(
            outputs, output=self.output, scores=self.scores, selected=self.named_outputs, where="model"
        )


def _split(inputs: list[SignatureInput], batch: np.ndarray) -> list[np.ndarray]:
    if len(inputs) == 1:
        return [_typed(inputs[0], batch)]
    columns = batch.reshape(len(batch), -1) if batch.ndim != 2 else batch
    if columns.shape[1] != len(inputs):
        names = ", ".join(i.name for i in inputs)
        raise InputError(
            f"the signature takes {len(inputs)} inputs ({names}), one column each, "
            f"but got {columns.shape[1]} columns; set inputs: to those column names"
        )
    parts = []
    for j, spec in enumerate(inputs):
        column = columns[:, j]
        parts.append(_typed(spec, column.reshape(len(column), 1) if spec.rank == 2 else column))
    return parts


def _typed(spec: SignatureInput, values: np.ndarray) -> np.ndarray:
    if spec.dtype is np.str_:
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]
        return np.asarray(flat, dtype=object).reshape(values.shape)
    if values.dtype == object:
        values = values.astype(np.float64)
    return standard_layout(values, spec.dtype)


def _device(tf: Any, device: str, uri: str) -> str:
    if device in ("cpu", "auto") and not (device == "auto" and tf.config.list_physical_devices("GPU")):
        return "/CPU:0"
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"model {uri}: unknown device {device!r}; expected auto, cpu or cuda")
    if not tf.config.list_physical_devices("GPU"):
        raise ModelError(
            f"model {uri}: device {device} requested but TensorFlow sees no GPU "
            "(tensorflow-cpu is installed by inferline[tensorflow]; install tensorflow[and-cuda] for GPUs)"
        )
    index = device.partition(":")[2] or "0"
    return f"/GPU:{index}"
