"""PyTorch models: a state_dict plus `model_class:`, a TorchScript file, or a pickled module.

- state_dict (`.pt`/`.pth` written by `torch.save(model.state_dict(), path)`): needs
  `model_class: package.module:Class` and optional `model_params: {...}` (the class's
  keyword arguments), as Beam's `PytorchModelHandlerTensor` takes them. Loaded with
  `torch.load(weights_only=True)`, which cannot run code.
- TorchScript (`torch.jit.save`, usually `.pt`/`.pts`): self-contained, no class needed.
- A whole pickled module (`torch.save(model, path)`): runs code on load, so only from
  trusted locations (see `ensure_trusted`).

The model runs in `eval()` mode under `torch.inference_mode()`, one tensor per batch. It is a
classifier (argmax + probabilities) only when the module registered last is a softmax or the
spec says `output: classes`; otherwise its output comes back raw (`models/outputs.py`).

Example:
    >>> handler = TorchHandler(model_class="inferline.examples.digits:DigitsCNN")
    >>> model = handler.load("examples/digits/models/digits-1.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import check_output_mode, classify, several

DEVICES = ("auto", "cpu", "cuda")


def torch_module() -> Any:
    return require("torch", "torch")


def pick_device(torch: Any, device: str, uri: str) -> str:
    """`auto` -> cuda when available else cpu; `cuda` without CUDA is a clear error."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ModelError(f"model {uri}: unknown device {device!r}; expected auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    available = bool(torch.cuda.is_available())
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ModelError(
            f"model {uri}: device {device} requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use device: cpu or auto, or install a CUDA build of torch"
        )
    return device


def import_class(target: str, *, uri: str) -> Any:
    """`package.module:Class` -> the class, with errors that say what to fix."""
    module_name, sep, name = target.partition(":")
    if not sep or not module_name or not name:
        raise ModelError(f"model {uri}: model_class {target!r} must look like package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"model {uri}: cannot import {module_name!r} for model_class ({exc}); "
            "is the package installed or on PYTHONPATH?"
        ) from None
    cls: Any = module
    for part in name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise ModelError(f"model {uri}: module {module_name!r} has no {name!r} (model_class)")
    return cls


def is_torchscript(path: str) -> bool:
    # TorchScript archives hold compiled code next to the weights; state_dict zips do not.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


class TorchHandler:
    """Runs a torch `nn.Module` (or TorchScript module) on whole batches.

    Example:
        >>> handler = TorchHandler(device="cpu")
        >>> handler.framework
        'torch'
    """

    framework = "torch"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        device: str = "cpu",
        scores: bool = True,
        model_class: str | None = None,
        model_params: Mapping[str, Any] | None = None,
        output: str | None = None,
        named_outputs: list[str] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.scores = scores
        self.model_class = model_class
        self.model_params = dict(model_params or {})
        self.output = output
        self.named_outputs = named_outputs
        self._device = "cpu"
        self._where = "model"

    def load(self, uri: str) -> Any:
        torch = torch_module()
        check_output_mode(self.output, where=f"model {uri}")
        self._where = f"model {uri}"
        self._device = pick_device(torch, self.device, uri)
        with local_copy(uri) as path:
            if is_torchscript(path):
                model = self._load_script(torch, uri, path)
            elif self.model_class is not None:
                model = self._load_state_dict(torch, uri, path)
            else:
                model = self._load_pickled(torch, uri, path)
        model.eval()
        return model

    def _load_script(self, torch: Any, uri: str, path: str) -> Any:
        try:
            with warnings.catch_warnings():
                # torch 2.9+ marks TorchScript deprecated in favour of torch.export; the
                # files still load, and the user cannot act on the warning at run time.
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                return torch.jit.load(path, map_location=self._device)
        except Exception as exc:
            raise ModelError(f"model {uri}: cannot load TorchScript file ({_first_line(exc)})") from exc

    def _load_state_dict(self, torch: Any, uri: str, path: str) -> Any:
        assert self.model_class is not None
        cls = import_class(self.model_class, uri=uri)
        try:
            state = torch.load(path, map_location=self._device, weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"model {uri}: cannot load as a torch state_dict ({_first_line(exc)}); "
                "save it with torch.save(model.state_dict(), path)"
            ) from exc
        if not isinstance(state, Mapping):
            raise ModelError(
                f"model {uri}: expected a state_dict (a mapping of tensors), got {type(state).__name__}"
            )
        try:
            model = cls(**self.model_params)
        except TypeError as exc:
            raise ModelError(
                f"model {uri}: cannot build {self.model_class}(**model_params) ({exc}); check model_params:"
            ) from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(
                f"model {uri}: state_dict does not fit {self.model_class} ({_first_line(exc)}); "
                "check model_class: and model_params:"
            ) from None
        return model.to(self._device)

    def _load_pickled(self, torch: Any, uri: str, path: str) -> Any:
        ensure_trusted(uri, what="pickled torch module")
        try:
            model = torch.load(path, map_location=self._device, weights_only=False)
        except Exception as exc:
            raise ModelError(f"model {uri}: cannot load torch file ({_first_line(exc)})") from exc
        if isinstance(model, Mapping):
            raise ModelError(
                f"model {uri}: file holds a state_dict; set model_class: package.module:Class "
                "(and model_params: if the class takes arguments)"
            )
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"model {uri}: loaded a {type(model).__name__}, expected a torch.nn.Module")
        return model

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        torch = torch_module()
        dtype = _input_dtype(torch, model)
        # Arrow-backed arrays are read-only; torch wants to own writable memory.
        array = standard_layout(inputs, writable=True)
        tensor = torch.from_numpy(array).to(device=self._device, dtype=dtype)
        with torch.inference_mode():
            output = model(tensor)
        # Asked per batch (microseconds next to the forward pass), so any handler can run any model.
        classifier = ends_in_softmax(model)
        declared = self.output in ("classes", "argmax") or (classifier and self.output != "raw")
        if isinstance(output, (Mapping, tuple, list)) and len(output) > 1:
            values = [_numpy(v) for v in (output.values() if isinstance(output, Mapping) else output)]
            names = self.named_outputs or ([str(k) for k in output] if isinstance(output, Mapping) else None)
            # A classifier classifies its first output; the others come back under their names.
            first = (
                classify(values[0], output=self.output, scores=self.scores, classifier=classifier)
                if declared
                else None
            )
            return several(values, names, where=self._where, classified=first)
        if isinstance(output, (tuple, list)):
            output = output[0]
        elif isinstance(output, Mapping):
            output = next(iter(output.values()))
        return classify(_numpy(output), output=self.output, scores=self.scores, classifier=classifier)


SOFTMAX_LAYERS = ("Softmax", "LogSoftmax")


def ends_in_softmax(model: Any) -> bool:
    """Whether the module registered last is a softmax (`nn.Softmax`/`nn.LogSoftmax`), also in
    TorchScript, which keeps each submodule's class name as `original_name`."""
    leaves = [m for m in model.modules() if next(iter(m.children()), None) is None]
    last = leaves[-1] if leaves else model
    return str(getattr(last, "original_name", type(last).__name__)) in SOFTMAX_LAYERS


def _numpy(tensor: Any) -> np.ndarray:
    values: np.ndarray = tensor.detach().float().cpu().numpy()
    return values


def _input_dtype(torch: Any, model: Any) -> Any:
    # Feed the dtype the weights have (float32 normally): CSV features arrive as float64.
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
