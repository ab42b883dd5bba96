"""The Open Inference Protocol v2, protocol-neutral: what REST (`serve/v2.py`) and gRPC
(`serve/rpc/v2.py`) share.

Both front doors turn their wire format into `Tensor`s and back; this module decides what
a model accepts and answers, so metadata, config and infer always agree:

- inputs: one tensor `input` of shape `[-1, *row]`, or (for a model with named features) one
  `[-1]` tensor per feature, matched by name; a BYTES `input` to an image model holds encoded
  images, decoded with its saved image settings;
- outputs: `predictions` (`[-1, ...]`, the model's own dtype) and, when the model gives them,
  `scores` (`[-1, k]`). Their datatypes are learnt once per version by predicting one row of
  zeros (`ServedVersion.probe`), so metadata never promises what infer does not give.

Example:
    >>> tensor = Tensor("input", "FP32", np.zeros((2, 4), np.float32))
    >>> rows = rows_for(served, [tensor], where="POST /v2/models/iris/infer")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from inferline.models.base import Prediction
from inferline.models.hooks import HookError
from inferline.models.onnx import is_classifier
from inferline.serve.http import ApiError, bad_request, invalid_input
from inferline.serve.images import decode_image_body, has_image_settings
from inferline.serve.models import ServedModel, ServedVersion
from inferline.serve.state import ServerState
from inferline.serve.tensors import NUMERIC, Tensor, datatype_of

log = logging.getLogger("inferline.serve")

WHOLE = "input"
OUTPUTS = ("predictions", "scores")

TensorSpec = dict[str, Any]  # {"name", "datatype", "shape"} as in v2 metadata


@dataclass
class InferRequest:
    """A decoded v2 infer request: tensors, wanted outputs (None: all), id, parameters.

    `batch` is the inputs as an Arrow batch, kept for the model's hooks (`prepare`).
    """

    inputs: list[Tensor]
    outputs: list[str] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    batch: pa.RecordBatch | None = None


def prepare(served: ServedVersion, request: InferRequest, *, where: str) -> np.ndarray:
    """The model's rows for `request`: its hooks' `preprocess` when it has one, else by name."""
    hooks = served.hooks
    if hooks is None or not hooks.active:
        return rows_for(served, request.inputs, where=where)
    request.batch = tensors_batch(request.inputs, served)
    try:
        inputs = hooks.preprocess(request.batch, parameters=request.parameters)
    except HookError as exc:
        raise ApiError(500, "HookError", str(exc)) from exc
    if inputs is not None:
        return served.check_rows(np.asarray(inputs), input_name="inputs")
    return rows_for(served, request.inputs, where=where)


def tensors_batch(tensors: list[Tensor], served: ServedVersion) -> pa.RecordBatch:
    """Tensors as hook rows: one column per tensor, a list per row when a row holds several values."""
    columns: dict[str, Any] = {}
    for tensor in tensors:
        array = tensor.array.reshape(len(tensor.array), -1) if tensor.array.ndim > 1 else tensor.array
        columns[tensor.name] = array.tolist() if array.ndim > 1 or array.dtype == object else array
    try:
        return pa.RecordBatch.from_pydict(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise bad_request(f"model {served.model_id}: inputs do not share one number of rows ({exc})") from exc


def input_datatype(served: ServedVersion) -> str:
    """The datatype the model computes in (any numeric datatype is accepted and converted)."""
    framework = served.framework
    if framework == "onnx":
        get_inputs = getattr(served.loaded.model, "get_inputs", None)
        if callable(get_inputs):
            onnx_type = str(get_inputs()[0].type)
            return {"tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}.get(
                onnx_type, "FP32"
            )
        return "FP32"
    return "FP64" if framework in ("sklearn", "remote") else "FP32"


def input_specs(served: ServedVersion) -> list[TensorSpec]:
    datatype = input_datatype(served)
    if served.inputs:
        text = set(served.loaded.text_inputs)  # string inputs of a multi-input ONNX graph
        return [
            {"name": name, "datatype": "BYTES" if name in text else datatype, "shape": [-1]}
            for name in served.inputs
        ]
    return [{"name": WHOLE, "datatype": datatype, "shape": served.expected_shape()}]


def specs_of(prediction: Prediction) -> list[TensorSpec]:
    specs = []
    for name, array in tensors_of(prediction).items():
        specs.append({"name": name, "datatype": datatype_of(array), "shape": [-1, *array.shape[1:]]})
    return specs


def tensors_of(prediction: Prediction) -> dict[str, np.ndarray]:
    """The answer's tensors: `predictions` (+ `scores`), or one per named output of a model with
    several outputs."""
    others = prediction.others()
    if prediction.outputs is not None and others is None:
        return {name: np.asarray(values) for name, values in prediction.outputs.items()}
    tensors = {"predictions": prediction.prediction}
    if prediction.scores is not None:
        tensors["scores"] = prediction.scores
    for name, values in (others or {}).items():  # a classifier's other outputs
        tensors.setdefault(name, np.asarray(values))
    return tensors


async def output_specs(served: ServedVersion) -> list[TensorSpec]:
    """The outputs infer answers, learnt by predicting one row of zeros (cached per version)."""
    if served.output_specs is not None:
        return served.output_specs
    probe = await served.probe()
    if probe is not None:
        served.output_specs = specs_of(probe) + label_specs(served)
        return served.output_specs
    return static_specs(served) + label_specs(served)


ONNX_TYPES = {
    "tensor(double)": "FP64",
    "tensor(float)": "FP32",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
}


def static_specs(served: ServedVersion) -> list[TensorSpec]:
    """The outputs as the model file declares them, when a row of zeros cannot be predicted
    (e.g. a text input that must be a known category)."""
    model = served.loaded.model
    scores_on = getattr(served.loaded.handler, "scores", True)
    get_outputs = getattr(model, "get_outputs", None)  # onnxruntime.InferenceSession
    if served.framework == "onnx" and callable(get_outputs):
        outputs = get_outputs()
        if len(outputs) > 1 and not is_classifier(outputs):
            return [
                {
                    "name": o.name,
                    "datatype": ONNX_TYPES.get(o.type, "FP32"),
                    "shape": [-1, *(d if isinstance(d, int) else -1 for d in (o.shape or [None])[1:])],
                }
                for o in outputs
            ]
        dims = [d if isinstance(d, int) else -1 for d in (outputs[0].shape or [None])[1:]]
        datatype = ONNX_TYPES.get(outputs[0].type, "FP32")
        specs = [{"name": "predictions", "datatype": datatype, "shape": [-1, *dims]}]
        if scores_on and len(outputs) > 1:
            shape = outputs[1].shape or [None, None]
            width = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else -1
            specs.append({"name": "scores", "datatype": "FP64", "shape": [-1, width]})
        return specs
    classes = getattr(model, "classes_", None)
    datatype = datatype_of(np.asarray(classes)) if classes is not None else "FP32"
    specs = [{"name": "predictions", "datatype": datatype, "shape": [-1]}]
    if scores_on and classes is not None and hasattr(model, "predict_proba"):
        specs.append({"name": "scores", "datatype": "FP64", "shape": [-1, len(classes)]})
    return specs


def label_specs(served: ServedVersion) -> list[TensorSpec]:
    """The outputs a model's label map adds (a user hook's are learnt from its first answer)."""
    if served.hooks is None:
        return []
    types = {"label": "BYTES", "top_labels": "BYTES", "top_scores": "FP64"}
    return [
        {"name": name, "datatype": types[name], "shape": [-1] if name == "label" else [-1, -1]}
        for name in served.hooks.label_types()
    ]


def remember_outputs(served: ServedVersion, prediction: Prediction) -> None:
    """Learn a version's outputs from a real answer when zeros could not teach them."""
    if served.output_specs is None:
        served.output_specs = specs_of(prediction)


def check_outputs(served: ServedVersion, wanted: list[str] | None, *, where: str) -> None:
    if wanted is None:
        return
    known = [s["name"] for s in served.output_specs] if served.output_specs is not None else list(OUTPUTS)
    unknown = [name for name in wanted if name not in known]
    if unknown and served.hooks is None:  # a hook's outputs are known after its first answer
        raise bad_request(f"model {served.model_id}: unknown outputs {unknown}; expected {', '.join(known)}")


def outputs_for(served: ServedVersion, prediction: Prediction, request: InferRequest) -> list[Tensor]:
    """The answer's tensors: every output (with the hooks' columns), or the wanted ones in order."""
    wanted = request.outputs
    remember_outputs(served, prediction)
    available = tensors_of(prediction)
    if request.batch is not None and served.hooks is not None:
        try:
            columns = served.hooks.postprocess(request.batch, prediction, parameters=request.parameters)
        except HookError as exc:
            raise ApiError(500, "HookError", str(exc)) from exc
        for name, column in columns.items():
            available[name] = column_array(name, column, served)
        _remember_hook_outputs(served, available)
    if wanted is not None and any(n not in available for n in wanted):
        missing = [n for n in wanted if n not in available]
        raise bad_request(
            f"model {served.model_id}: unknown outputs {missing}; expected {', '.join(available)}"
        )
    names = list(available) if wanted is None else wanted
    return [Tensor(name, datatype_of(available[name]), np.asarray(available[name])) for name in names]


def column_array(name: str, column: Any, served: ServedVersion) -> np.ndarray:
    """A hook's result column as an output array: numbers, text (BYTES), or regular lists."""
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    try:
        array = np.asarray(values)
    except ValueError:  # rows of different lengths (numpy >= 1.24 refuses them)
        array = np.asarray(values, dtype=object)
    if array.dtype.kind in "US":
        array = array.astype(object)
    if array.dtype == object and array.ndim == 1 and any(isinstance(v, list) for v in values):
        raise ApiError(
            500, "HookError", f"model {served.model_id}: hook output {name!r} has rows of different lengths"
        )
    return array


def _remember_hook_outputs(served: ServedVersion, available: dict[str, np.ndarray]) -> None:
    specs = served.output_specs or []
    known = {spec["name"] for spec in specs}
    for name, array in available.items():
        if name not in known:
            specs.append({"name": name, "datatype": datatype_of(array), "shape": [-1, *array.shape[1:]]})
    served.output_specs = specs


def rows_for(served: ServedVersion, tensors: list[Tensor], *, where: str) -> np.ndarray:
    """The model's input rows from a request's tensors, matched by name (else a 400)."""
    names = [t.name for t in tensors]
    whole = f"one tensor {WHOLE!r} of shape {served.expected_shape()}"
    expected = f"{', '.join(served.inputs)} (one [n] tensor each), or {whole}" if served.inputs else whole
    accepted = [*served.inputs, WHOLE]
    unknown = list(dict.fromkeys(n for n in names if n not in accepted))
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = [n for n in served.inputs if n not in names]
    problem = (
        f"unknown inputs {', '.join(map(repr, unknown))}"
        if unknown
        else f"repeated inputs {', '.join(repeated)}"
        if repeated
        else f"both {WHOLE!r} and per-feature inputs"
        if WHOLE in names and len(names) > 1
        else f"missing inputs {', '.join(missing)}"
        if WHOLE not in names and missing
        else None
    )
    if problem is not None:
        raise bad_request(f"model {served.model_id}: {problem}; expected {expected}")
    if WHOLE in names:
        return _whole_rows(tensors[0], served)
    return _columns(tensors, served)


def _whole_rows(tensor: Tensor, served: ServedVersion) -> np.ndarray:
    array = tensor.array
    if tensor.datatype == "BYTES":
        if served.spec.text_only:  # `input` of a text model: its one text input by another name
            return _columns([Tensor(served.inputs[0], "BYTES", tensor.array)], served)
        return _images(tensor, served)
    if array.ndim == 1 and served.row_shape is not None and served.row_shape != (1,):
        row_size = int(np.prod(served.row_shape))
        array = array.reshape(1, *served.row_shape) if array.shape[0] == row_size else array
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    return served.check_rows(array, input_name=tensor.name)


def _images(tensor: Tensor, served: ServedVersion) -> np.ndarray:
    if not has_image_settings(served):
        raise invalid_input(
            f"model {served.model_id}: input {tensor.name!r} has datatype 'BYTES'; expected a numeric "
            f"datatype (FP32, FP64, INT64, ...) of shape {served.expected_shape()}"
        )
    images = [decode_image_body(bytes(data), served) for data in tensor.array.reshape(-1)]
    if not images:
        raise invalid_input(f"model {served.model_id}: input {tensor.name!r} holds no images")
    return np.concatenate(images)


def _columns(tensors: list[Tensor], served: ServedVersion) -> np.ndarray:
    by_name = {t.name: t for t in tensors}
    text = set(served.loaded.text_inputs)
    for tensor in tensors:
        if (tensor.datatype == "BYTES") != (tensor.name in text):
            expected = "BYTES (text)" if tensor.name in text else "numbers"
            raise invalid_input(
                f"model {served.model_id}: input {tensor.name!r} has datatype {tensor.datatype!r}; "
                f"expected {expected}"
            )
    if any(by_name[n].array.ndim == 0 for n in served.inputs):
        raise invalid_input(
            f"model {served.model_id}: per-feature inputs must all have shape [n] with the same n"
        )
    columns = [by_name[n].array.reshape(len(by_name[n].array), -1) for n in served.inputs]
    lengths = {len(c) for c in columns}
    if len(lengths) != 1 or any(c.shape[1] != 1 for c in columns):
        raise invalid_input(
            f"model {served.model_id}: per-feature inputs must all have shape [n] with the same n"
        )
    if text:  # one object matrix: text columns as str, the others as floats
        rows = np.empty((lengths.pop(), len(columns)), dtype=object)
        for j, (name, column) in enumerate(zip(served.inputs, columns, strict=True)):
            values = column[:, 0]
            rows[:, j] = [v.decode() for v in values] if name in text else values.astype(np.float64)
        return served.check_rows(rows, input_name="inputs")
    return served.check_rows(np.hstack(columns).astype(np.float64), input_name="inputs")


def versions_of(model: ServedModel) -> list[str]:
    return sorted(model.versions, key=lambda v: (not v.isdigit(), v.zfill(12)))


async def model_metadata(model: ServedModel, served: ServedVersion) -> dict[str, Any]:
    """v2 model metadata: the inputs infer accepts and the outputs it answers."""
    return {
        "name": served.name,
        "versions": versions_of(model),
        "platform": served.framework,
        "inputs": input_specs(served),
        "outputs": await output_specs(served),
        "parameters": {"model_id": served.model_id, "features": served.inputs},
    }


TRITON_TYPES = {datatype: f"TYPE_{datatype}" for datatype in NUMERIC} | {"BYTES": "TYPE_STRING"}


def _config_tensor(spec: TensorSpec) -> dict[str, Any]:
    dims = spec["shape"][1:]
    out = {"name": spec["name"], "data_type": TRITON_TYPES[spec["datatype"]], "dims": dims or [1]}
    if not dims:  # a [-1] tensor: one value per row, as Triton writes it
        out["reshape"] = {"shape": []}
    return out


async def model_config(served: ServedVersion) -> dict[str, Any]:
    """A Triton-style model config (what `get_model_config` of tritonclient reads)."""
    batcher = served.batcher
    return {
        "name": served.name,
        "platform": served.framework,
        "backend": served.framework,
        "max_batch_size": batcher.batch_size,
        "input": [_config_tensor(spec) for spec in input_specs(served)],
        "output": [_config_tensor(spec) for spec in await output_specs(served)],
        "dynamic_batching": {"max_queue_delay_microseconds": int(batcher.max_batch_delay_ms * 1000)},
        "parameters": {"model_id": {"string_value": served.model_id}},
    }


async def repository_models(state: ServerState) -> list[dict[str, str]]:
    """Every model of the store and what is served: name, version, state (READY/UNAVAILABLE)."""
    names = set(state.models.names())
    if state.catalog is not None:
        names |= set(await state.catalog.stored_names())
    out = []
    for name in sorted(names):
        model = state.models.models.get(name)
        if model is not None and model.default is not None:
            out.append({"name": name, "version": model.default, "state": "READY"})
        else:
            out.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
    return out
