"""TorchServe model archives (`.mar`): the archive's handler runs on batches of requests.

A `.mar` is a zip holding `MAR-INF/MANIFEST.json` (modelName, modelVersion, serializedFile,
modelFile, handler, extraFiles...) next to those files. `MarHandler.load` extracts it to a
private folder and initialises its handler the way TorchServe does: a built-in name
(`image_classifier`, see `inferline.models.ts_builtin`) or a custom handler file, either a
module with `handle(data, context)` or a class with `initialize(context)` and `handle(data,
context)` (TorchServe's `BaseHandler` gives the latter from preprocess/inference/postprocess).

Rows are TorchServe's request items (`{"data"|"body": bytes or JSON}`) in an object array,
so inferline's dynamic batcher hands the handler a list of them as TorchServe's frontend does;
each answer item is one request's answer. The archive's `requirements` are never installed.

Example:
    >>> manifest = read_manifest("mnist.mar")  # doctest: +SKIP
    >>> manifest["model"]["modelName"]  # doctest: +SKIP
    'mnist'
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferline.errors import ModelError
from inferline.models.base import Prediction
from inferline.models.files import local_copy
from inferline.models.ts_compat import stand_ins
from inferline.models.ts_context import TorchServeContext, TorchServeRequest
from inferline.models.ts_stream import Listener

MANIFEST = "MAR-INF/MANIFEST.json"
FRAMEWORK = "torchserve"
BUILTIN = ("image_classifier", "image_segmenter", "object_detector", "text_classifier")
UNBATCHED = ("text_classifier",)  # TorchServe's answers the first request of a batch only
_IMPORT_LOCK = threading.Lock()  # handlers import files from their model_dir via sys.path


def read_manifest(uri: str) -> dict[str, Any]:
    """The archive's `MAR-INF/MANIFEST.json`, with errors naming the archive."""
    with local_copy(uri) as path:
        try:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(MANIFEST)
        except zipfile.BadZipFile:
            raise ModelError(
                f"model archive {uri}: not a zip file (expected a .mar made by torch-model-archiver)"
            ) from None
        except KeyError:
            raise ModelError(
                f"model archive {uri}: no {MANIFEST} (expected a .mar made by torch-model-archiver)"
            ) from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"model archive {uri}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("model"), dict):
        raise ModelError(f'model archive {uri}: {MANIFEST} has no "model" object')
    return manifest


def archive_metadata(uri: str) -> dict[str, Any]:
    """What the store records about an archive: its name, version string and handler.

    The handler is kept as `ts_handler`: `handler` is inferline's own hook key.
    """
    model = read_manifest(uri)["model"]
    meta = {
        "model_name": model.get("modelName"),
        "model_version": model.get("modelVersion"),
        "ts_handler": model.get("handler"),
    }
    return {key: str(value) for key, value in meta.items() if value}


@dataclass
class Worker:
    """One handler instance and its own context (a TorchServe worker process's pair)."""

    service: Any  # an object's bound handle(data, context), or a module-level handle function
    context: TorchServeContext


@dataclass
class MarModel:
    """A loaded archive: its folder, manifest and initialised handler.

    Each worker (model calls running at once, `ensure_workers`) uses its own handler
    instance and context, as each TorchServe worker process has its own: handlers keep
    state on `self`, and the context holds the headers of the batch being handled.
    """

    uri: str
    model_dir: str
    manifest: dict[str, Any]
    context: TorchServeContext
    service: Any
    make_worker: Callable[[], Worker] | None = None
    batches: bool = True  # False: the handler answers only its first item (TorchServe's text_classifier)
    _idle: list[Worker] = field(default_factory=list)
    _workers: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._idle.append(Worker(self.service, self.context))

    def ensure_workers(self, workers: int) -> None:
        """Initialise handler instances until there is one per worker."""
        while self._workers < workers and self.make_worker is not None:
            worker = self.make_worker()
            with self._lock:
                self._idle.append(worker)
                self._workers += 1

    def handle(
        self,
        requests: list[Any],
        headers: list[dict[str, str]] | None = None,
        listeners: list[Listener | None] | None = None,
    ) -> list[Any]:
        if not self.batches and len(requests) > 1:
            heads = headers or [{} for _ in requests]
            hears = listeners or [None for _ in requests]
            return [
                self.handle([r], [h], [listener])[0]
                for r, h, listener in zip(requests, heads, hears, strict=True)
            ]
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:  # more calls at once than instances: this call's worker gets its own
            worker = (
                self.make_worker() if self.make_worker is not None else Worker(self.service, self.context)
            )
            with self._lock:
                self._workers += 1
        context = worker.context
        try:
            context.start_batch(headers or [{} for _ in requests])
            streamed = [
                (context.request_ids[i], listener)
                for i, listener in enumerate(listeners or [])
                if listener is not None and context.request_ids
            ]
            for request_id, listener in streamed:
                context.cl_socket.listen(request_id, listener)
            try:
                answers = worker.service(requests, context)
            finally:
                for request_id, _ in streamed:
                    context.cl_socket.forget(request_id)
        finally:
            with self._lock:
                self._idle.append(worker)
        if answers is None or not isinstance(answers, list | tuple):
            raise ModelError(
                f"model archive {self.uri}: handler returned {type(answers).__name__}, "
                "expected a list with one answer per request"
            )
        return list(answers)


class MarHandler:
    """Loads `.mar` archives and runs their TorchServe handler on batches of request items."""

    framework = FRAMEWORK
    batch_size: int | None = None

    def __init__(self, *, batch_size: int | None = None, gpu_id: int | None = None) -> None:
        self.configured_batch_size = batch_size
        self.gpu_id = gpu_id

    def load(self, uri: str) -> MarModel:
        manifest = read_manifest(uri)
        model_dir = os.path.realpath(tempfile.mkdtemp(prefix="inferline-mar-"))
        with local_copy(uri) as path, zipfile.ZipFile(path) as archive:
            _extract(archive, model_dir, uri)
        model = manifest["model"]
        context = TorchServeContext(
            model_name=str(model.get("modelName", "")),
            manifest=manifest,
            system_properties={
                "model_dir": model_dir,
                "gpu_id": self.gpu_id,
                "batch_size": self.configured_batch_size or 1,
                "server_name": "MMS",
                "server_version": "inferline",
                "limit_max_image_pixels": True,
            },
        )
        handler = str(model.get("handler") or "")
        service = _service(handler, model_dir, context, uri)

        def another_worker() -> Worker:
            own = context.for_worker()
            return Worker(_service(handler, model_dir, own, uri), own)

        loaded = MarModel(
            uri, model_dir, manifest, context, service, another_worker, batches=handler not in UNBATCHED
        )
        weakref.finalize(loaded, shutil.rmtree, model_dir, True)
        return loaded

    def predict(self, model: MarModel, inputs: np.ndarray) -> Prediction:
        requests = [row.item if isinstance(row, TorchServeRequest) else row for row in inputs]
        headers = [row.headers if isinstance(row, TorchServeRequest) else {} for row in inputs]
        listeners = [row.listener if isinstance(row, TorchServeRequest) else None for row in inputs]
        answers = model.handle(requests, headers, listeners)
        if len(answers) != len(requests):
            raise ModelError(
                f"model archive {model.uri}: handler answered {len(answers)} items "
                f"for {len(requests)} requests"
            )
        out = np.empty(len(answers), dtype=object)
        for i, answer in enumerate(answers):
            out[i] = answer
        return Prediction(prediction=out)


def _extract(archive: zipfile.ZipFile, target: str, uri: str) -> None:
    root = os.path.realpath(target)
    for member in archive.namelist():
        path = os.path.realpath(os.path.join(root, member))
        if path != root and not path.startswith(root + os.sep):
            raise ModelError(f"model archive {uri}: member {member!r} would extract outside its folder")
    archive.extractall(root)


def _service(handler: str, model_dir: str, context: TorchServeContext, uri: str) -> Any:
    """The handler's `handle(data, context)`, initialised once as TorchServe does.

    The archive's folder is on `sys.path` meanwhile (handlers import its `model.py`), with
    stand-ins for torchvision and captum when they are not installed (`ts_compat`).
    """
    if not handler:
        raise ModelError(f"model archive {uri}: its manifest names no handler")
    with _IMPORT_LOCK, stand_ins():
        sys.path.insert(0, model_dir)
        before = set(sys.modules)
        try:
            return _initialised(handler, model_dir, context, uri)
        finally:
            sys.path.remove(model_dir)
            # The archive's own modules (model.py, ...) must not shadow another archive's.
            for name in set(sys.modules) - before:
                module_path = getattr(sys.modules[name], "__file__", None) or ""
                if module_path.startswith(model_dir):
                    del sys.modules[name]


def _initialised(handler: str, model_dir: str, context: TorchServeContext, uri: str) -> Any:
    if handler == "image_classifier":
        from inferline.models.ts_builtin import ImageClassifier

        classifier = ImageClassifier()
        classifier.initialize(context)
        return classifier.handle
    if handler in BUILTIN:  # TorchServe's own handler class, from the torchserve package
        try:
            module = importlib.import_module(f"ts.torch_handler.{handler}")
        except ImportError as exc:
            raise ModelError(
                f"model archive {uri}: the built-in handler {handler} runs TorchServe's own code; "
                f"install inferline[torchserve] ({exc})"
            ) from None
        return _handler_class(module, handler, uri, context)
    if "/" in handler or "\\" in handler:
        handler = os.path.basename(handler)
    module_file, _, function = handler.partition(":")
    path = os.path.join(model_dir, module_file if module_file.endswith(".py") else module_file + ".py")
    if not os.path.isfile(path):
        raise ModelError(
            f"model archive {uri}: handler {handler!r} is neither a built-in ({', '.join(BUILTIN)}) "
            "nor a .py file in the archive"
        )
    module = _import(path, uri)
    if function:
        return getattr(module, function)
    if callable(getattr(module, "handle", None)):
        return module.handle
    return _handler_class(module, handler, uri, context)


def _handler_class(module: Any, handler: str, uri: str, context: TorchServeContext) -> Any:
    """The one handler class the module defines, made and initialised; its `handle`."""
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__ and hasattr(value, "handle")
    ]
    if len(classes) != 1:
        raise ModelError(
            f"model archive {uri}: handler {handler!r} defines no handle(data, context) function and "
            f"{len(classes)} handler classes (expected exactly one)"
        )
    service = classes[0]()
    service.initialize(context)
    return service.handle


def _import(path: str, uri: str) -> Any:
    name = f"inferline_mar_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"model archive {uri}: cannot import handler {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        hint = " (install inferline[torchserve] for handlers that import ts)" if "'ts" in str(exc) else ""
        raise ModelError(
            f"model archive {uri}: handler {os.path.basename(path)} failed to import: {exc}{hint}"
        ) from None
    return module
