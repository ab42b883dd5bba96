"""The served-model registry: name -> versions -> loaded model + its dynamic batcher.

`ServedModels` keeps what the server answers with. Requests resolve a `ServedVersion` once,
when they arrive, and finish on it: swapping the default version (a new version in the
store, `set-default`) only changes which version the *next* request gets, so in-flight
requests never fail across a swap. Loading always happens off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inferline.models.base import LoadedModel, Prediction
from inferline.models.hooks import ModelHooks
from inferline.serve.batching import DynamicBatcher
from inferline.serve.bodies import RowSpec
from inferline.serve.http import ApiError, not_found
from inferline.serve.metrics import ServerMetrics

log = logging.getLogger("inferline.serve")

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # --max-image-pixels


@dataclass(frozen=True)
class BatchSettings:
    """How one model's requests are batched (TorchServe's `batch_size`/`max_batch_delay`) and
    how many model calls run at once (TorchServe's workers: `min_worker`, `max_worker`)."""

    batch_size: int = 32
    max_batch_delay_ms: float = 5.0
    max_queue: int = 1024
    workers: int = 1
    max_workers: int = 1
    # Wait for the clients a model call answered (`DynamicBatcher`); `serve --processes N > 1`.
    await_answered: bool = False


class ServedVersion:
    """One loaded version of a model, with the batcher its requests go through."""

    def __init__(
        self,
        loaded: LoadedModel,
        settings: BatchSettings,
        metrics: ServerMetrics,
        *,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.max_image_pixels = max_image_pixels  # image bodies larger than this are refused
        self.loaded = loaded
        self.name = loaded.name
        self.version = loaded.version
        self.batcher = DynamicBatcher(
            loaded.predict,
            batch_size=settings.batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            max_queue=settings.max_queue,
            on_batch=metrics.batch_observer(loaded.name),
            on_wait=metrics.queue_observer(loaded.name),
            name=loaded.model_id,
            workers=settings.workers,
            await_answered=settings.await_answered,
        )
        self.max_workers = max(settings.workers, settings.max_workers)
        self.row_shape: tuple[int, ...] | None = feature_shape(loaded)
        self.hooks = hooks_from(loaded)
        self._probe: Prediction | None = None
        self._probed = False
        # The v2 outputs this version answers (`serve/inference.py`), learnt on first use.
        self.output_specs: list[dict[str, Any]] | None = None
        # Store metadata `allow_missing: true` (or a model that imputes, e.g. one trained in SQL):
        # the model takes NaN (null in JSON) for missing values.
        self.spec = RowSpec(
            loaded.model_id,
            tuple(loaded.inputs),
            self.row_shape,
            allow_missing=loaded.allow_missing,
            text=tuple(loaded.text_inputs),
        )

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    @property
    def inputs(self) -> list[str]:
        return self.loaded.inputs

    @property
    def framework(self) -> str:
        return self.loaded.handler.framework

    @property
    def metadata(self) -> dict[str, Any]:
        return self.loaded.metadata

    def expected_shape(self) -> list[int]:
        """The batch shape a request must have, -1 for the number of rows."""
        return self.spec.expected_shape()

    def check_rows(self, rows: np.ndarray, *, input_name: str = "input") -> np.ndarray:
        """`rows` if its shape fits this model, else a 422 naming the input and expected shape."""
        return self.spec.check_rows(rows, input_name=input_name)

    async def predict(self, rows: np.ndarray, *, expected: bool = False) -> Prediction:
        return await self.batcher.predict(rows, expected=expected)

    async def scale(self, workers: int, max_workers: int) -> None:
        """Run `workers` model calls at once; a `.mar` gets one handler instance per worker,
        initialised before the new workers take requests (as TorchServe starts its workers)."""
        prepare = getattr(self.loaded.model, "ensure_workers", None)
        if callable(prepare) and workers > 1:
            await asyncio.to_thread(prepare, workers)
        self.batcher.scale(workers)
        self.max_workers = max(workers, max_workers)

    async def probe(self) -> Prediction | None:
        """The model's answer to one row of zeros, which shows the outputs it really gives
        (asked once, off the event loop); None when the row shape is unknown or it fails."""
        if not self._probed:
            self._probed = True
            if self.row_shape is not None:
                rows = np.zeros((1, *self.row_shape))
                try:
                    self._probe = await asyncio.to_thread(self.loaded.predict, rows)
                except Exception as exc:  # noqa: BLE001 - metadata then says what it can
                    log.debug("model %s: output probe failed: %s", self.model_id, exc)
        return self._probe


def hooks_from(loaded: LoadedModel) -> ModelHooks | None:
    """The hooks saved in a model's store metadata (`handler`, `labels`, `top_k`), if any.

    The same `ModelHooks` the pipeline engine uses, so a model behaves alike in both.
    """
    meta = loaded.metadata
    if not (meta.get("handler") or meta.get("labels") or meta.get("top_k")):
        return None
    top_k = meta.get("top_k")
    hooks = ModelHooks(
        str(meta["handler"]) if meta.get("handler") else None,
        labels=str(meta["labels"]) if meta.get("labels") else None,
        top_k=int(top_k) if top_k else None,
        where=f"model {loaded.model_id}",
    )
    hooks.open()
    hooks.setup(loaded)
    return hooks


def settings_from(metadata: dict[str, Any], base: BatchSettings) -> BatchSettings:
    """`base` with the `batch_size`/`max_batch_delay` (ms) saved in a model's store metadata."""
    changes: dict[str, Any] = {}
    size = metadata.get("batch_size")
    if isinstance(size, int) and size > 0:
        changes["batch_size"] = size
    delay = metadata.get("max_batch_delay")
    if isinstance(delay, (int, float)) and delay >= 0:
        changes["max_batch_delay_ms"] = float(delay)
    return replace(base, **changes) if changes else base


def feature_shape(loaded: LoadedModel) -> tuple[int, ...] | None:
    """The shape of one input row, when the model or its metadata says it."""
    shape = loaded.metadata.get("input_shape")
    if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
        return tuple(shape)
    image = loaded.metadata.get("image", loaded.metadata)
    if isinstance(image, dict) and image.get("resize"):
        # Images saved with a fixed size: (C, H, W) or (H, W, C) after decoding.
        size = [int(v) for v in image["resize"]]
        height, width = size * 2 if len(size) == 1 else size[:2]
        channels = 1 if image.get("mode") == "L" else 3
        nhwc = str(image.get("layout", "NCHW")).upper() == "NHWC"
        return (height, width, channels) if nhwc else (channels, height, width)
    if loaded.inputs:
        return (len(loaded.inputs),)
    features = getattr(loaded.model, "n_features_in_", None)
    if isinstance(features, int):
        return (features,)
    get_inputs = getattr(loaded.model, "get_inputs", None)  # onnxruntime.InferenceSession
    if callable(get_inputs):
        dims = list(get_inputs()[0].shape)[1:]
        if dims and all(isinstance(d, int) for d in dims):
            return tuple(dims)
    shape = getattr(loaded.model, "input_shape", None)  # a built Keras model: (None, *row)
    if loaded.handler.framework == "keras" and isinstance(shape, tuple) and len(shape) > 1:
        if all(isinstance(d, int) for d in shape[1:]):
            return tuple(shape[1:])
    return None


@dataclass
class ServedModel:
    """All loaded versions of one model name and which one is the default."""

    name: str
    settings: BatchSettings
    versions: dict[str, ServedVersion] = field(default_factory=dict)
    default: str | None = None
    url: str = ""


Loader = Callable[[str, str | None], LoadedModel]


class ServedModels:
    """What the server answers with; `get(name, version)` is the request path's lookup.

    Example:
        >>> models = ServedModels(ServerMetrics())
        >>> models.add(loaded_iris)  # doctest: +SKIP
        >>> models.get("iris").model_id  # doctest: +SKIP
        'iris/1'
    """

    def __init__(
        self,
        metrics: ServerMetrics,
        *,
        settings: BatchSettings | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        per_model: dict[str, BatchSettings] | None = None,
    ) -> None:
        self.max_image_pixels = max_image_pixels
        self.metrics = metrics
        self.settings = settings or BatchSettings()
        self.per_model = per_model or {}  # a model's own settings (TorchServe's config `models=`)
        self.models: dict[str, ServedModel] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        metrics.watch_queues(self.queue_depths)

    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str, version: str | None = None) -> ServedVersion:
        """The version a request should use: `version`, or the model's default."""
        model = self.models.get(name)
        if model is None or model.default is None:
            raise not_found(f"model {name!r} is not served; have {', '.join(self.names()) or 'none'}")
        key = model.default if version is None else version
        served = model.versions.get(key) or _by_version_string(model, key)
        if served is None:
            have = ", ".join(sorted(model.versions, key=_version_key))
            raise ApiError(
                404,
                "ModelVersionNotFoundException",
                f"model {name!r} has no loaded version {key!r}; have {have}",
            )
        return served

    def settings_for(self, name: str) -> BatchSettings:
        model = self.models.get(name)
        return model.settings if model is not None else self.per_model.get(name, self.settings)

    def add(self, loaded: LoadedModel, *, default: bool = True, url: str = "") -> ServedVersion:
        """Serve `loaded`; with `default=True` the next requests for its name use it."""
        model = self.models.get(loaded.name)
        if model is None:
            model = self.models[loaded.name] = ServedModel(
                loaded.name, self.settings_for(loaded.name), url=url
            )
        served = ServedVersion(
            loaded,
            settings_from(loaded.metadata, model.settings),
            self.metrics,
            max_image_pixels=self.max_image_pixels,
        )
        model.versions[loaded.version] = served
        if default or model.default is None:
            model.default = loaded.version
        if url:
            model.url = url
        self._report_versions()
        return served

    def set_settings(self, name: str, settings: BatchSettings) -> None:
        model = self.models.get(name)
        if model is None:
            return
        model.settings = settings
        for served in model.versions.values():
            served.batcher.batch_size = settings.batch_size
            served.batcher.max_batch_delay_ms = settings.max_batch_delay_ms
            served.batcher.max_queue = settings.max_queue

    def set_default(self, name: str, version: str) -> None:
        self.get(name, version)
        self.models[name].default = version
        self._report_versions()

    async def discard(self, name: str, version: str | None = None) -> None:
        """Stop serving one version (or the whole model) once its queued requests are answered."""
        model = self.models.get(name)
        if model is None:
            return
        if version is None:
            del self.models[name]
            victims = list(model.versions.values())
        else:
            victim = model.versions.pop(version, None)
            victims = [victim] if victim is not None else []
            if model.default == version:
                model.default = max(model.versions, key=_version_key) if model.versions else None
            if model.default is None:
                del self.models[name]
        self._report_versions()
        for served in victims:
            await served.batcher.close()

    async def load(self, name: str, version: str, loader: Callable[[], LoadedModel]) -> ServedVersion:
        """Load a version off the event loop (once, however many requests ask for it)."""
        lock = self._loading.setdefault((name, version), asyncio.Lock())
        async with lock:
            model = self.models.get(name)
            if model is not None and version in model.versions:
                return model.versions[version]
            loaded = await asyncio.to_thread(loader)
            return self.add(loaded, default=False)

    def queue_depths(self) -> dict[str, int]:
        return {
            name: sum(v.batcher.depth for v in model.versions.values()) for name, model in self.models.items()
        }

    async def close(self) -> None:
        for model in list(self.models.values()):
            for served in model.versions.values():
                await served.batcher.close()

    def _report_versions(self) -> None:
        self.metrics.set_versions({name: (list(m.versions), m.default) for name, m in self.models.items()})


def _by_version_string(model: ServedModel, key: str) -> ServedVersion | None:
    """A version named by its archive's own version string (`/predictions/mnist/1.0`)."""
    found = [v for v in model.versions.values() if v.metadata.get("model_version") == key]
    return max(found, key=lambda v: _version_key(v.version)) if found else None


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
