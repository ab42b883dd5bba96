"""The server's view of the model store: load at start, follow new versions, manage.

`StoreCatalog` polls the store every `interval` seconds (cheap: a directory listing and a few
small JSON files, and it works for any fsspec URI). When a model's current version (pinned,
else newest) changes, the new version is loaded on a worker thread and then becomes the
default; requests already holding the old version finish on it. A version that fails to load
is logged once and retried with backoff while the old one keeps serving.

Management changes go through the store too, so a restarted server comes back the same:
`register` adds a version, `set_default` pins. `unregister` only stops serving (files stay);
the model comes back when it is registered again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from inferline.errors import InferlineError
from inferline.models.base import LoadedModel
from inferline.serve.http import ApiError, bad_request, not_found
from inferline.serve.models import BatchSettings, ServedModels, ServedVersion, settings_from
from inferline.serve.security import check_registrable

log = logging.getLogger("inferline.serve")


def load_from_store(store: Any, name: str, version: int, base: BatchSettings | None = None) -> LoadedModel:
    """Load a stored version with the handler options saved in its metadata (a torch
    state_dict's class, a SavedModel's `signature`, a Hugging Face `task`: the store passes
    `models.store.HANDLER_OPTIONS` to the handlers that take them).

    A `.mar` handler's `context.system_properties["batch_size"]` is the batch size the server
    will hand it (`base` with the version's own `batch_size`), as TorchServe tells its handlers.
    """
    found = store.get(name, version)
    options = {}
    if found.framework == "torchserve" and base is not None:
        options["batch_size"] = settings_from(found.metadata, base).batch_size
    return store.load(name, version, handler_options=options or None)  # type: ignore[no-any-return]


class StoreCatalog:
    """Keeps `ServedModels` in step with a `ModelStore`.

    Example:
        >>> catalog = StoreCatalog(ModelStore("model_store"), served)  # doctest: +SKIP
        >>> catalog.load_all()  # doctest: +SKIP
        ['iris/2']
    """

    def __init__(self, store: Any, models: ServedModels) -> None:
        self.store = store
        self.models = models
        self.hidden: set[str] = set()
        self.hidden_versions: set[tuple[str, str]] = set()
        self._failed: dict[tuple[str, str], tuple[int, float]] = {}

    def load_all(self) -> list[str]:
        """Load the current version of every model in the store (at start, before serving)."""
        loaded = []
        for name in self.store.names():
            try:
                found = self.store.current(name)
                self.models.add(
                    load_from_store(self.store, name, found.version, self.models.settings_for(name)),
                    default=True,
                    url=found.uri,
                )
                loaded.append(f"{name}/{found.version}")
            except Exception as exc:  # one broken model must not keep the others down
                log.warning("model %s: not served: %s", name, exc)
        return loaded

    async def watch(self, interval: float) -> None:
        """Poll the store forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("model store %s: cannot read it: %s", self.store.root, exc)

    async def sync(self) -> list[str]:
        """Make each model's current store version its default; returns the swapped-in ids."""
        current = await asyncio.to_thread(self._current_versions)
        swapped = []
        for name, found in current.items():
            version = str(found.version)
            model = self.models.models.get(name)
            if model is not None and model.default == version:
                continue
            if model is not None and version in model.versions:
                self.models.set_default(name, version)
                swapped.append(f"{name}/{version}")
                continue
            key = (name, version)
            if key in self.hidden_versions:
                continue
            attempts, retry_at = self._failed.get(key, (0, 0.0))
            if time.monotonic() < retry_at:
                continue
            previous = model.default if model is not None else None
            try:
                loaded = await asyncio.to_thread(
                    load_from_store, self.store, name, found.version, self.models.settings_for(name)
                )
                # Its hooks (handler=, labels=) open here: a bad one must fail this model only.
                self.models.add(loaded, default=True, url=found.uri)
            except Exception as exc:
                if attempts == 0:
                    still = f"still serving version {previous}" if previous else "not serving it"
                    log.warning("model %s/%s: cannot load, %s: %s", name, version, still, exc)
                self._failed[key] = (attempts + 1, time.monotonic() + min(60.0, 2.0**attempts))
                continue
            self._failed.pop(key, None)
            log.info("model %s: now serving version %s", name, version)
            swapped.append(loaded.model_id)
            if previous is not None:
                # Free the replaced version once its queued requests are answered; asking for
                # it by number loads it again.
                await self.models.discard(name, previous)
        return swapped

    def _current_versions(self) -> dict[str, Any]:
        found = {}
        for name in self.store.names():
            if name in self.hidden:
                continue
            try:
                found[name] = self.store.current(name)
            except InferlineError:
                continue  # no complete version yet
        return found

    async def stored_names(self) -> list[str]:
        names: list[str] = await asyncio.to_thread(self.store.names)
        return names

    async def load_model(self, name: str) -> ServedVersion:
        """Serve `name` again (after an unload) at its current store version, or reload it."""
        try:
            found = await asyncio.to_thread(self.store.current, name)
        except InferlineError as exc:
            raise not_found(f"model {name!r}: not in the model store ({exc})") from exc
        version = str(found.version)
        self.hidden.discard(name)
        self.hidden_versions.discard((name, version))
        served = await self.load_version(name, version)
        self.models.set_default(name, version)
        self.models.models[name].url = found.uri
        return served

    async def load_version(self, name: str, version: str) -> ServedVersion:
        """A version asked for by number: load it from the store if it is there."""
        if name in self.hidden:
            raise not_found(f"model {name!r} is not served")
        if (name, version) in self.hidden_versions or not version.isdigit():
            raise ApiError(404, "ModelVersionNotFoundException", f"model {name!r} has no version {version!r}")
        try:
            await asyncio.to_thread(self.store.get, name, int(version))
        except InferlineError as exc:
            raise ApiError(404, "ModelVersionNotFoundException", str(exc)) from exc
        try:
            return await self.models.load(
                name,
                version,
                lambda: load_from_store(self.store, name, int(version), self.models.settings_for(name)),
            )
        except Exception as exc:
            raise ApiError(
                500,
                "InternalServerException",
                f"model {name}/{version}: cannot load it ({exc}); the default keeps serving",
            ) from exc

    async def register(
        self,
        url: str,
        name: str,
        settings: BatchSettings,
        *,
        framework: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ServedVersion:
        """Add the file at `url` to the store as `name`'s next version and serve it (`metadata`
        is stored with it: image settings, handler options such as `signature` or `task`).

        As TorchServe, the first version of a model becomes its default and later ones do not
        (until `set_default`): the default is pinned in the store before the new version
        lands, so neither the watcher nor a restart swaps to it.
        """
        try:
            await asyncio.to_thread(check_registrable, url, framework)
        except InferlineError as exc:
            raise bad_request(f"POST /models: {exc}") from exc
        archive_version = await asyncio.to_thread(_archive_version, url, framework)
        if archive_version is not None:
            try:
                stored = await asyncio.to_thread(self.store.versions, name)
            except InferlineError:
                stored = []
            if any(found.metadata.get("model_version") == archive_version for found in stored):
                raise ApiError(
                    409,
                    "ConflictStatusException",
                    f"POST /models: model {name!r} version {archive_version!r} is already registered",
                )
        model = self.models.models.get(name)
        first = model is None or model.default is None
        try:
            if not first and model is not None and model.default is not None:
                if await asyncio.to_thread(self.store.pinned, name) is None:
                    await asyncio.to_thread(self.store.pin, name, int(model.default))
            # A new version of a served model takes over its input names unless told otherwise.
            inputs = model.versions[model.default].inputs if model and model.default else None
            found = await asyncio.to_thread(
                self.store.add, name, url, framework=framework, inputs=inputs, metadata=metadata
            )
        except InferlineError as exc:
            raise bad_request(f"POST /models: {exc}") from exc
        try:
            loaded = await asyncio.to_thread(load_from_store, self.store, name, found.version, settings)
            if first and await asyncio.to_thread(self.store.pinned, name) is not None:
                await asyncio.to_thread(self.store.pin, name, found.version)  # an unloaded model's old pin
        except InferlineError as exc:
            # A version that cannot load must not stay in the store for watchers to trip on.
            await asyncio.to_thread(self.store.remove, name, found.version)
            raise bad_request(f"POST /models: {exc}") from exc
        self.hidden.discard(name)
        self.hidden_versions.discard((name, str(found.version)))
        served = self.models.add(loaded, default=first, url=found.uri)
        self.models.set_settings(name, settings)
        return served

    def _number_of(self, model: Any, version: str) -> str:
        """The store number of `version`, which may be an archive's own version string ("1.0")."""
        if version in model.versions or version.isdigit():
            return version
        for number, served in model.versions.items():
            if served.metadata.get("model_version") == version:
                return str(number)
        return version

    async def _stored(self, name: str, version: str) -> bool:
        if not version.isdigit() or (name, version) in self.hidden_versions:
            return False
        try:
            await asyncio.to_thread(self.store.get, name, int(version))
        except InferlineError:
            return False
        return True

    async def set_default(self, name: str, version: str) -> ServedVersion:
        """Pin `version` in the store (so it survives restarts and new versions) and serve it."""
        model = self.models.models.get(name)
        if model is not None:
            version = self._number_of(model, version)  # an archive's own "2.0" names its number
        served = await self.load_version(name, version)
        try:
            await asyncio.to_thread(self.store.pin, name, int(version))
        except InferlineError as exc:
            raise bad_request(str(exc)) from exc
        self.models.set_default(name, version)
        return served

    async def unregister(self, name: str, version: str | None) -> None:
        """Stop serving `name` (or one non-default version of it); the store keeps the files."""
        model = self.models.models.get(name)
        if model is None:
            raise not_found(f"model {name!r} is not served; have {', '.join(self.models.names()) or 'none'}")
        if version is None:
            self.hidden.add(name)
        else:
            version = self._number_of(model, version)
            if version not in model.versions and not await self._stored(name, version):
                raise ApiError(
                    404,
                    "ModelVersionNotFoundException",
                    f"DELETE /models/{name}/{version}: model {name!r} has no such version",
                )
            if version == model.default and len(model.versions) > 1:
                raise ApiError(
                    403,
                    "InvalidModelVersionException",
                    f"DELETE /models/{name}/{version}: it is the default version; "
                    f"set another default first (PUT /models/{name}/VERSION/set-default)",
                )
            self.hidden_versions.add((name, version))
            if version == model.default:
                self.hidden.add(name)
        await self.models.discard(name, version)


def _archive_version(url: str, framework: str | None) -> str | None:
    """A `.mar`'s own version string (`modelVersion`), or None for other model files."""
    if (framework or "") != "torchserve" and not url.lower().endswith(".mar"):
        return None
    from inferline.models.mar import archive_metadata

    return archive_metadata(url).get("model_version")
