"""The `ModelHandler` protocol and framework detection.

A handler knows one framework: `load(uri)` returns the framework's model object and
`predict(model, inputs)` runs it on a whole batch. Framework modules are imported lazily,
so a missing extra only fails when that framework is used, with one line naming the extra.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol, runtime_checkable

import fsspec
import numpy as np

from inferline.errors import ModelError

# framework -> (module, class). Adding a framework is one new module and one line here.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "sklearn": ("inferline.models.sklearn", "SklearnHandler"),
    "onnx": ("inferline.models.onnx", "OnnxHandler"),
    "torch": ("inferline.models.torch", "TorchHandler"),
    "keras": ("inferline.models.keras", "KerasHandler"),
    "xgboost": ("inferline.models.xgboost", "XGBoostHandler"),
    "lightgbm": ("inferline.models.lightgbm", "LightGBMHandler"),
    "catboost": ("inferline.models.catboost", "CatBoostHandler"),
    "tensorflow": ("inferline.models.tensorflow", "TensorFlowHandler"),
    "tflite": ("inferline.models.tflite", "TFLiteHandler"),
    "huggingface": ("inferline.models.huggingface", "HuggingFaceHandler"),
    "remote": ("inferline.models.remote", "RemoteHandler"),
    "torchserve": ("inferline.models.mar", "MarHandler"),
}

SUFFIXES: dict[str, str] = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".skops": "sklearn",
    ".onnx": "onnx",
    ".pt": "torch",
    ".pts": "torch",
    ".pth": "torch",
    ".keras": "keras",
    ".h5": "keras",
    ".ubj": "xgboost",
    ".bst": "xgboost",
    ".model": "xgboost",
    ".cbm": "catboost",
    ".tflite": "tflite",
    ".mar": "torchserve",
}

# Suffixes many tools write: the file's first bytes say which framework made it.
SNIFFED: dict[str, tuple[tuple[bytes, str], ...]] = {
    ".json": ((b'"learner"', "xgboost"),),
    ".txt": ((b"tree\n", "lightgbm"), (b"tree\r\n", "lightgbm")),
}


@dataclass
class Prediction:
    """What a handler returns for a batch of n rows.

    `prediction` has n rows (1-D labels/values, or 2-D raw outputs); `scores` is an
    optional (n, k) float array of probabilities or extra outputs.
    """

    prediction: np.ndarray
    scores: np.ndarray | None = None
    # A model with several outputs that is not a classifier: each output by name, in the
    # model's order (`prediction` is then the first of them). Written one column each.
    outputs: dict[str, np.ndarray] | None = None

    def others(self) -> dict[str, np.ndarray] | None:
        """A classifier's other outputs by name (its `outputs` beside `prediction`/`scores`, see
        `outputs.with_other_outputs`), or None when this is not a classifier with others.

        Example:
            >>> p = Prediction(np.array([1]), np.array([[0.2, 0.8]]), {"prediction": np.array([1]),
            ...     "scores": np.array([[0.2, 0.8]]), "embedding": np.zeros((1, 2))})
            >>> list(p.others())
            ['embedding']
        """
        if self.outputs is None or self.scores is None or "scores" not in self.outputs:
            return None
        return {k: v for k, v in self.outputs.items() if k not in ("prediction", "scores")}

    def rows(self, start: int, end: int) -> Prediction:
        """Rows start..end of every array (a slice of a batched answer)."""
        return Prediction(
            prediction=self.prediction[start:end],
            scores=None if self.scores is None else self.scores[start:end],
            outputs=None if self.outputs is None else {k: v[start:end] for k, v in self.outputs.items()},
        )

    def instances(self) -> list[dict[str, Any]]:
        """One object per row with a field per named output (a server's JSON answer).

        Example:
            >>> Prediction(np.array([1]), outputs={"y": np.array([1]), "z": np.array([[2, 3]])}).instances()
            [{'y': 1, 'z': [2, 3]}]
        """
        columns = {name: np.asarray(values).tolist() for name, values in (self.outputs or {}).items()}
        return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    @staticmethod
    def concat(parts: list[Prediction]) -> Prediction:
        """Consecutive slices' answers as one (scores/outputs only when every part has them).

        Example:
            >>> a = Prediction(np.array([1]), outputs={"y": np.array([1]), "z": np.array([[2, 3]])})
            >>> Prediction.concat([a, a]).outputs["z"].shape
            (2, 2)
        """
        scores = [p.scores for p in parts if p.scores is not None]
        named = [p.outputs for p in parts if p.outputs is not None]
        outputs = None
        if named and len(named) == len(parts):
            outputs = {k: np.concatenate([o[k] for o in named]) for k in named[0]}
        return Prediction(
            prediction=np.concatenate([p.prediction for p in parts]),
            scores=np.concatenate(scores) if scores and len(scores) == len(parts) else None,
            outputs=outputs,
        )


@runtime_checkable
class ModelHandler(Protocol):
    """Loads and runs one framework's models on whole batches.

    Example:
        >>> handler = handler_for("models/iris.onnx")  # doctest: +SKIP
        >>> model = handler.load("models/iris.onnx")  # doctest: +SKIP
        >>> handler.predict(model, features).prediction  # doctest: +SKIP
    """

    framework: str
    batch_size: int | None

    def load(self, uri: str) -> Any: ...

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction: ...


@dataclass
class LoadedModel:
    """A loaded model with its identity; `model_id` travels with every prediction."""

    name: str
    version: str
    uri: str
    handler: ModelHandler
    model: Any
    inputs: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A model with several named inputs (an ONNX graph exported one input per column)
        # takes the columns of those names unless the spec or store says otherwise.
        graph = model_inputs(self.handler, self.model)
        if not self.inputs or (sorted(self.inputs) == sorted(graph) and self.inputs != graph):
            self.inputs = graph

    @property
    def model_id(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def text_inputs(self) -> list[str]:
        """Input columns fed as text (an ONNX string input), in `inputs` order."""
        names = getattr(self.handler, "text_inputs", None)
        if names is None or not self.inputs:
            return []
        text = set(names(self.model))
        graph = model_inputs(self.handler, self.model)
        if not graph:  # named text columns (a trained pipeline), or one input: text or not as a whole
            named = [column for column in self.inputs if column in text]
            return named or (list(self.inputs) if text else [])
        return [column for column, name in zip(self.inputs, graph, strict=False) if name in text]

    @property
    def allow_missing(self) -> bool:
        """Whether missing features (NULL/NaN) reach the model instead of failing the row: store
        metadata `allow_missing: true`, or a model that imputes them itself (one trained by
        CREATE MODEL ... AS SELECT: BigQuery's NULL imputation is its first step)."""
        if str(self.metadata.get("allow_missing", "")).lower() in ("true", "1", "yes"):
            return True
        imputes = getattr(self.handler, "imputes_missing", None)
        return bool(imputes(self.model)) if imputes is not None else False

    def predict(self, inputs: np.ndarray) -> Prediction:
        return self.handler.predict(self.model, inputs)


def model_inputs(handler: ModelHandler, model: Any) -> list[str]:
    """The input names a handler reads off its model (several named inputs), else []."""
    names = getattr(handler, "input_names", None)
    return list(names(model)) if names is not None else []


def detect_suffix(uri: str) -> str | None:
    """The framework a file's suffix alone names, if any."""
    return SUFFIXES.get(PurePosixPath(uri.rstrip("/")).suffix.lower())


def detect_framework(uri: str) -> str:
    """Framework for a model file from its suffix, e.g. `.onnx` -> `onnx`."""
    path = PurePosixPath(uri.rstrip("/"))
    framework = SUFFIXES.get(path.suffix.lower())
    if framework is not None:
        return framework
    sniffed = _sniff(uri, path.suffix.lower())
    if sniffed is not None:
        return sniffed
    if _is_saved_model(uri):
        return "tensorflow"
    if "://" not in uri and os.path.isfile(os.path.join(uri, "config.json")):
        return "huggingface"  # a save_pretrained folder (local only)
    known = ", ".join(sorted([*SUFFIXES, *SNIFFED]))
    raise ModelError(
        f"model {uri}: unknown model format {path.suffix or '(no suffix)'!r}; "
        f"expected one of {known}, a SavedModel or Hugging Face folder, or set framework: in the model spec"
    )


def _is_saved_model(uri: str) -> bool:
    # A SavedModel is a folder holding saved_model.pb (and variables/), local or remote.
    try:
        fs, _, (root,) = fsspec.get_fs_token_paths(uri.removeprefix("file://"))
        return bool(fs.exists(root.rstrip("/") + "/saved_model.pb"))
    except (OSError, ValueError):
        return False


def _sniff(uri: str, suffix: str) -> str | None:
    signatures = SNIFFED.get(suffix)
    if not signatures:
        return None
    try:
        with fsspec.open(uri, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    for marker, framework in signatures:
        found = head.startswith(marker) if marker.startswith(b"tree") else marker in head
        if found:
            return framework
    return None


def handler_for(
    uri: str, *, framework: str | None = None, options: dict[str, Any] | None = None
) -> ModelHandler:
    """The handler for `uri`, from `framework` or else the file suffix."""
    name = framework or detect_framework(uri)
    if name not in FRAMEWORKS:
        known = ", ".join(sorted(FRAMEWORKS))
        raise ModelError(f"model {uri}: unknown framework {name!r}; expected one of {known}")
    handler: ModelHandler = handler_class(name)(**(options or {}))
    return handler


def handler_class(framework: str) -> Any:
    """The handler class of a known framework (its module imported, not the framework's)."""
    module_name, class_name = FRAMEWORKS[framework]
    return getattr(importlib.import_module(module_name), class_name)


def handler_parameters(framework: str) -> set[str]:
    """The keyword options a framework's handler takes, e.g. `signature` for tensorflow."""
    if framework not in FRAMEWORKS:
        return set()
    return set(inspect.signature(handler_class(framework)).parameters)


def is_remote_uri(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def ensure_trusted(uri: str, *, what: str = "pickled model", listed_only: bool = False) -> None:
    """Refuse to unpickle from places the user has not trusted.

    Pickle runs code on load. Local files are trusted by default; remote URIs are not
    unless listed (by prefix) in INFERLINE_TRUSTED_PATHS (os.pathsep-separated). When
    INFERLINE_TRUSTED_PATHS is set, local files must be under one of its entries too.
    `listed_only=True` (files named by a web request) trusts listed locations only.
    """
    trusted = [p for p in os.environ.get("INFERLINE_TRUSTED_PATHS", "").split(os.pathsep) if p]
    if not trusted:
        if not is_remote_uri(uri) and not listed_only:
            return
    else:
        target = uri if is_remote_uri(uri) else os.path.realpath(uri.removeprefix("file://"))
        for prefix in trusted:
            root = prefix if is_remote_uri(prefix) else os.path.realpath(prefix)
            if target == root or target.startswith(root.rstrip("/") + "/"):
                return
    raise ModelError(
        f"model {uri}: refusing to load a {what} from an untrusted location; "
        "use the safe .skops or .onnx format, or add its folder to INFERLINE_TRUSTED_PATHS"
    )
