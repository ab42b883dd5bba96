"""Hot swap: a model handle whose `current()` follows new versions as they appear.

A background thread notices changes (inotify through `watchfiles` for local folders, polling
every `watch_interval` seconds for remote URIs), loads the new version off the hot path and
then swaps it in with one reference assignment. The engine reads `current()` once per batch,
so the batch in flight finishes on the old model. A version that fails to load is retried
with exponential backoff, reported once (log + `on_error`), and the old model keeps serving.

Example:
    >>> ref = WatchingModelRef(StoreVersions(spec), name="iris", interval=1.0)  # doctest: +SKIP
    >>> ref.open()  # doctest: +SKIP
    >>> ref.current().model_id  # doctest: +SKIP
    'iris/2'
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from inferline.backoff import Backoff
from inferline.models.base import LoadedModel, is_remote_uri
from inferline.models.registry import (
    ModelRef,
    list_versions,
    load_from_store,
    load_version,
    resolve_uri,
    store_version,
)
from inferline.models.store import ModelStore
from inferline.pipeline import ModelSpec

log = logging.getLogger("inferline.models")

_GLOB_CHARS = ("*", "?", "[")
_HEARTBEAT_MS = 100
LOAD_BACKOFF = Backoff(1.0, 30.0)


@dataclass(frozen=True)
class Candidate:
    """A version that could be served; `signature` changes when its bytes may have changed."""

    version: str
    uri: str
    signature: str


class VersionSource(Protocol):
    """Where a watched model's versions come from: a store, or a file glob."""

    def target(self) -> Candidate:
        """The version that should be serving now (pinned, else newest)."""
        ...

    def load(self, candidate: Candidate) -> LoadedModel: ...

    def older(self, candidate: Candidate) -> list[Candidate]:
        """Versions before `candidate`, newest first, to start on when it does not load
        (none when a version is pinned: a pin is not second-guessed)."""
        ...

    def watch_path(self) -> str | None:
        """A local folder to watch for changes, or None to poll."""
        ...

    def recursive(self) -> bool:
        """Whether changes below `watch_path()`'s subfolders matter."""
        ...


class StoreVersions:
    """Versions of `spec.name` in the store `spec.store`; honours pins (spec, then store)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.store = ModelStore(spec.store or "")

    def target(self) -> Candidate:
        found = store_version(self.spec)
        return Candidate(str(found.version), found.uri, found.sha256)

    def load(self, candidate: Candidate) -> LoadedModel:
        return load_from_store(self.spec, self.store.get(self.spec.name, int(candidate.version)))

    def older(self, candidate: Candidate) -> list[Candidate]:
        versions = self.store.versions(self.spec.name)
        if self.spec.version is not None or not versions or str(versions[-1].version) != candidate.version:
            return []  # pinned (in the spec or the store)
        return [Candidate(str(v.version), v.uri, v.sha256) for v in reversed(versions[:-1])]

    def watch_path(self) -> str | None:
        path = self.store.uri_of(self.spec.name)
        return None if is_remote_uri(path) else path

    def recursive(self) -> bool:
        return True  # versions are subfolders


class GlobVersions:
    """Files matching `spec.uri`; the newest match (or `spec.version`) is the target."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def target(self) -> Candidate:
        found = resolve_uri(self.spec)
        return Candidate(found.version, found.uri, f"{found.uri}@{found.mtime}")

    def load(self, candidate: Candidate) -> LoadedModel:
        return load_version(self.spec, candidate.uri, candidate.version)

    def older(self, candidate: Candidate) -> list[Candidate]:
        if self.spec.version is not None:
            return []
        versions = [v for v in list_versions(self.spec.uri or "") if v.uri != candidate.uri]
        return [Candidate(v.version, v.uri, f"{v.uri}@{v.mtime}") for v in reversed(versions)]

    def watch_path(self) -> str | None:
        pattern = self.spec.uri or ""
        if is_remote_uri(pattern):
            return None
        parts = pattern.removeprefix("file://").split("/")
        fixed = []
        for part in parts[:-1]:
            if any(c in part for c in _GLOB_CHARS):
                break
            fixed.append(part)
        folder = "/".join(fixed) or "."
        return folder if os.path.isdir(folder) else None

    def recursive(self) -> bool:
        # Only when a folder part of the pattern is a wildcard (`models/*/model.onnx`).
        parts = (self.spec.uri or "").split("/")[:-1]
        return any(c in part for part in parts for c in _GLOB_CHARS)


@dataclass
class _Failure:
    attempts: int
    next_try: float


class WatchingModelRef(ModelRef):
    """A `ModelRef` that swaps in new versions from a background thread.

    `check()` does one round (find the target, load it if new, swap); the thread calls it on
    every file-system event and every `interval` seconds. Tests call it directly with an
    injected `clock`.
    """

    def __init__(
        self,
        source: VersionSource,
        *,
        name: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff = LOAD_BACKOFF,
        on_error: Callable[[str, str], None] | None = None,
        on_swap: Callable[[LoadedModel], None] | None = None,
        use_inotify: bool = True,
    ) -> None:
        self.source = source
        self.name = name
        self.interval = interval
        self.clock = clock
        self.backoff = backoff
        self.on_error = on_error
        self.on_swap = on_swap
        self.use_inotify = use_inotify
        self.swaps = 0
        self.errors: list[str] = []
        self._serving: LoadedModel | None = None
        self._key: tuple[str, str] | None = None
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._reported: set[str] = set()
        self._stop = threading.Event()
        # Set once changes can no longer be missed (the file watch is registered, or polling).
        self.armed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------
    def open(self, *, start: bool = True) -> WatchingModelRef:
        """Load the current version (errors raise: there is nothing to serve yet), then watch."""
        candidate = self.source.target()
        try:
            self._serving = self.source.load(candidate)
            self._key = (candidate.version, candidate.signature)
        except Exception as exc:
            # A restart whose newest file is corrupt starts on the newest one that loads, as
            # a running process would have gone on serving it.
            if not self._start_on_older(candidate, exc):
                raise
        if start:
            self._thread = threading.Thread(
                target=self._run, name=f"inferline-watch-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def _start_on_older(self, candidate: Candidate, exc: Exception) -> bool:
        for older in self.source.older(candidate):
            try:
                self._serving = self.source.load(older)
            except Exception:  # noqa: BLE001 - an older broken file: keep looking
                continue
            self._key = (older.version, older.signature)
            key = (candidate.version, candidate.signature)
            self._failures[key] = _Failure(1, self.clock() + self.backoff.delay(1))
            model_id = f"{self.name}/{candidate.version}"
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._report(
                model_id,
                f"model {model_id}: cannot load {candidate.uri} ({first_line}); starting on "
                f"{self._serving.model_id}, the newest version that loads; retrying with backoff",
            )
            return True
        return False

    def current(self) -> LoadedModel:
        loaded = self._serving
        if loaded is None:
            raise RuntimeError(f"model {self.name}: open() the watching ref before use")
        return loaded

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # --- one round ------------------------------------------------------------------
    def check(self) -> bool:
        """Swap in the target version if it is new and loads; True when a swap happened."""
        with self._lock:
            try:
                candidate = self.source.target()
            except Exception as exc:  # e.g. the pinned version was removed; keep serving
                self._report(f"{self.name}:target:{exc}", f"model {self.name}: cannot find a version ({exc})")
                return False
            key = (candidate.version, candidate.signature)
            if key == self._key:
                return False
            failure = self._failures.get(key)
            now = self.clock()
            if failure is not None and now < failure.next_try:
                return False
            try:
                loaded = self.source.load(candidate)
            except Exception as exc:
                attempts = failure.attempts + 1 if failure is not None else 1
                self._failures[key] = _Failure(attempts, now + self.backoff.delay(attempts))
                model_id = f"{self.name}/{candidate.version}"
                serving = self._serving.model_id if self._serving is not None else "nothing"
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._report(
                    model_id,
                    f"model {model_id}: cannot load {candidate.uri} ({first_line}); "
                    f"still serving {serving}, retrying with backoff",
                )
                return False
            previous = self._serving
            self._serving = loaded
            self._key = key
            self._failures.pop(key, None)
            self.swaps += 1
        log.info(
            "model %s: now serving %s (was %s)",
            self.name,
            loaded.model_id,
            previous.model_id if previous is not None else "nothing",
        )
        if self.on_swap is not None:
            self.on_swap(loaded)
        return True

    def _report(self, once_key: str, message: str) -> None:
        if once_key in self._reported:
            return
        self._reported.add(once_key)
        self.errors.append(message)
        log.warning("warning: %s", message)
        if self.on_error is not None:
            self.on_error(self.name, message)

    # --- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        path = self.source.watch_path() if self.use_inotify else None
        if path is not None:
            try:
                self._watch_files(path)
            except Exception as exc:  # a vanished folder or no inotify: fall back to polling
                log.debug("model %s: file watching stopped (%s); polling instead", self.name, exc)
        self.armed.set()
        while not self._stop.wait(self.interval):
            self._safe_check()

    def _watch_files(self, path: str) -> None:
        try:
            import watchfiles
        except ImportError:
            log.debug("model %s: watchfiles not installed (inferline[watch]); polling", self.name)
            return
        # A short heartbeat: the first one comes once the watch is registered, and that
        # round catches anything added between open() and then; later heartbeats only
        # check every `interval` (a safety net for events the OS dropped).
        last = float("-inf")
        for changes in watchfiles.watch(
            path,
            stop_event=self._stop,
            rust_timeout=_HEARTBEAT_MS,
            yield_on_timeout=True,
            debounce=200,
            step=50,
            raise_interrupt=False,
            watch_filter=_not_partial,
            recursive=self.source.recursive(),
        ):
            if self._stop.is_set():
                return
            now = self.clock()
            if changes or now - last >= self.interval:
                last = now
                self._safe_check()
                self.armed.set()

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception:  # never let the watcher die; the old model keeps serving
            log.exception("model %s: watcher round failed", self.name)


def _not_partial(change: Any, path: str) -> bool:
    return not path.endswith(".partial")


def open_model_ref(
    spec: ModelSpec,
    *,
    on_error: Callable[[str, str], None] | None = None,
    on_swap: Callable[[LoadedModel], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ModelRef:
    """The engine's (or server's) handle on `spec`: fixed, or watching when `watch: true`.

    Example:
        >>> ref = open_model_ref(ModelSpec(name="iris", store="model_store", watch=True))  # doctest: +SKIP
        >>> ref.current().model_id  # doctest: +SKIP
        'iris/3'
        >>> ref.close()  # doctest: +SKIP
    """
    source: VersionSource = StoreVersions(spec) if spec.store else GlobVersions(spec)
    if not spec.watch:
        from inferline.models.registry import load_model

        return ModelRef(load_model(spec))
    ref = WatchingModelRef(
        source, name=spec.name, interval=spec.watch_interval, clock=clock, on_error=on_error, on_swap=on_swap
    )
    return ref.open()
