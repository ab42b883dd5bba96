"""Hot swap: watching a store or a glob, loading off the hot path, backoff, pins, reports."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from inferline.backoff import Backoff
from inferline.errors import ModelError
from inferline.models.base import LoadedModel
from inferline.models.registry import ModelRef
from inferline.models.store import ModelStore
from inferline.models.watch import (
    Candidate,
    GlobVersions,
    StoreVersions,
    WatchingModelRef,
    open_model_ref,
)
from inferline.pipeline import ModelSpec
from tests.conftest import FakeClock

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])


class CountingStoreVersions(StoreVersions):
    """The real store source, counting load attempts per version."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.loads: list[str] = []

    def load(self, candidate: Candidate) -> LoadedModel:
        self.loads.append(candidate.version)
        return super().load(candidate)


def constant_model(path: Path, label: int) -> Path:
    model = DummyClassifier(strategy="constant", constant=label).fit(np.zeros((3, 4)), [0, 1, label])
    joblib.dump(model, path)
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll `condition` until true; returns the seconds it took, fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def models(iris_example: Path, tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.joblib"
    corrupt.write_bytes(b"this is not a pickle")
    return {
        "iris": iris_example / "models" / "iris-1.joblib",
        "seven": constant_model(tmp_path / "seven.joblib", 7),
        "eight": constant_model(tmp_path / "eight.joblib", 8),
        "corrupt": corrupt,
    }


def test_check_swaps_in_a_new_version(tmp_path: Path, models: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["iris"]))
    spec = ModelSpec(name="iris", store=store.root, watch=True)
    swapped: list[str] = []
    ref = WatchingModelRef(StoreVersions(spec), name="iris", on_swap=lambda m: swapped.append(m.model_id))
    ref.open(start=False)
    old = ref.current()
    assert old.model_id == "iris/1" and old.predict(ROWS).prediction.tolist() == [0, 2]
    assert ref.check() is False
    store.add("iris", str(models["seven"]))
    assert ref.check() is True
    assert ref.current().model_id == "iris/2" and ref.current().predict(ROWS).prediction.tolist() == [7, 7]
    assert old.predict(ROWS).prediction.tolist() == [0, 2]  # a batch in flight keeps its model
    assert swapped == ["iris/2"] and ref.swaps == 1


def test_a_bad_version_is_retried_with_backoff_and_reported_once(
    tmp_path: Path, models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["seven"]))
    clock = FakeClock(now=100.0)
    reported: list[tuple[str, str]] = []
    source = CountingStoreVersions(ModelSpec(name="iris", store=store.root, watch=True))
    ref = WatchingModelRef(
        source,
        name="iris",
        clock=clock,
        backoff=Backoff(1.0, 4.0),
        on_error=lambda name, message: reported.append((name, message)),
    )
    ref.open(start=False)
    store.add("iris", str(models["corrupt"]))
    with caplog.at_level(logging.WARNING, logger="inferline.models"):
        for _ in range(3):
            assert ref.check() is False
    assert source.loads == ["1", "2"]  # no retry before the backoff delay
    assert ref.current().model_id == "iris/1"
    assert len(reported) == 1 and reported[0][0] == "iris"
    assert "model iris/2: cannot load" in reported[0][1] and "still serving iris/1" in reported[0][1]
    assert [r.getMessage() for r in caplog.records] == [f"warning: {reported[0][1]}"]
    delays = []
    for _ in range(4):
        before = len(source.loads)
        start = clock.now
        while len(source.loads) == before:
            clock.now += 0.5
            ref.check()
        delays.append(clock.now - start)
    assert delays == [1.0, 2.0, 4.0, 4.0]  # doubling, capped
    assert len(reported) == 1 and ref.errors == [reported[0][1]]
    store.add("iris", str(models["eight"]))
    assert ref.check() is True and ref.current().model_id == "iris/3"


def test_pins_are_followed(tmp_path: Path, models: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["iris"]))
    store.add("iris", str(models["seven"]))
    ref = WatchingModelRef(StoreVersions(ModelSpec(name="iris", store=store.root)), name="iris")
    ref.open(start=False)
    assert ref.current().model_id == "iris/2"
    store.pin("iris", 1)
    assert ref.check() and ref.current().model_id == "iris/1"
    store.add("iris", str(models["eight"]))
    assert not ref.check() and ref.current().model_id == "iris/1"
    store.unpin("iris")
    assert ref.check() and ref.current().model_id == "iris/3"


def test_a_spec_version_wins_over_new_versions(tmp_path: Path, models: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["iris"]))
    ref = WatchingModelRef(StoreVersions(ModelSpec(name="iris", store=store.root, version=1)), name="iris")
    ref.open(start=False)
    store.add("iris", str(models["seven"]))
    store.pin("iris", 2)
    assert not ref.check() and ref.current().model_id == "iris/1"


def test_a_target_that_cannot_be_found_keeps_the_model(tmp_path: Path, models: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["iris"]))
    reported: list[str] = []
    ref = WatchingModelRef(
        StoreVersions(ModelSpec(name="iris", store=store.root)),
        name="iris",
        on_error=lambda name, message: reported.append(message),
    )
    ref.open(start=False)
    (tmp_path / "store" / "iris" / "pinned").write_text("nine")
    assert not ref.check() and not ref.check()
    assert ref.current().model_id == "iris/1"
    assert len(reported) == 1 and "model iris: cannot find a version (" in reported[0]
    assert "holds 'nine', expected a version number" in reported[0]


def test_glob_versions_and_a_partly_copied_file(tmp_path: Path, models: dict[str, Path]) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "iris-1.joblib").write_bytes(models["iris"].read_bytes())
    spec = ModelSpec(name="iris", uri=f"{folder}/iris-*.joblib", watch=True)
    reported: list[str] = []
    ref = WatchingModelRef(
        GlobVersions(spec), name="iris", on_error=lambda name, message: reported.append(message)
    )
    ref.open(start=False)
    assert ref.source.watch_path() == str(folder)
    partial = folder / "iris-2.joblib"
    partial.write_bytes(models["seven"].read_bytes()[:40])  # a copy still in progress
    assert not ref.check() and ref.current().model_id == "iris/1"
    assert len(reported) == 1 and "model iris/2: cannot load" in reported[0]
    partial.write_bytes(models["seven"].read_bytes())
    stat = partial.stat()
    os.utime(partial, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert ref.check()  # the file changed: retried at once, despite the backoff
    assert ref.current().model_id == "iris/2"
    assert ref.current().predict(ROWS).prediction.tolist() == [7, 7]


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_the_watcher_thread_swaps_within_seconds(
    tmp_path: Path, models: dict[str, Path], use_inotify: bool
) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["iris"]))
    ref = WatchingModelRef(
        StoreVersions(ModelSpec(name="iris", store=store.root)),
        name="iris",
        interval=0.1 if not use_inotify else 30.0,  # inotify must not need the poll
        use_inotify=use_inotify,
    )
    ref.open()
    try:
        wait_for(ref.armed.is_set)
        store.add("iris", str(models["seven"]))
        took = wait_for(lambda: ref.current().model_id == "iris/2")
        assert took < 5.0
        store.pin("iris", 1)
        wait_for(lambda: ref.current().model_id == "iris/1")
    finally:
        ref.close()
    started = time.monotonic()
    ref.close()
    assert time.monotonic() - started < 1.0


def test_a_remote_store_is_polled(models: dict[str, Path]) -> None:
    store = ModelStore(f"memory://watched-{uuid.uuid4().hex}")
    store.add("iris", str(models["iris"]).replace(".joblib", ".onnx"))
    spec = ModelSpec(name="iris", store=store.root, watch=True, watch_interval=0.05)
    ref = open_model_ref(spec)
    try:
        assert isinstance(ref, WatchingModelRef) and ref.source.watch_path() is None
        store.add("iris", str(models["iris"]).replace(".joblib", ".onnx"))
        wait_for(lambda: ref.current().model_id == "iris/2")
    finally:
        ref.close()


def test_without_watch_the_version_is_fixed(tmp_path: Path, models: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["iris"]))
    ref = open_model_ref(ModelSpec(name="iris", store=store.root))
    assert type(ref) is ModelRef
    store.add("iris", str(models["seven"]))
    assert ref.current().model_id == "iris/1"
    ref.close()


def test_a_model_that_cannot_load_at_start_fails_the_open(tmp_path: Path, models: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(models["corrupt"]))
    with pytest.raises(ModelError, match=r"cannot load as a scikit-learn joblib/pickle file"):
        open_model_ref(ModelSpec(name="iris", store=store.root, watch=True))


def test_a_restart_whose_newest_version_is_corrupt_starts_on_the_newest_that_loads(
    tmp_path: Path, models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(str(tmp_path / "store"))
    for name in ("seven", "eight", "corrupt"):
        store.add("iris", str(models[name]))
    reported: list[str] = []
    with caplog.at_level(logging.WARNING, logger="inferline.models"):
        ref = open_model_ref(
            ModelSpec(name="iris", store=store.root, watch=True),
            on_error=lambda name, message: reported.append(message),
        )
        try:
            assert ref.current().model_id == "iris/2"
            assert (
                isinstance(ref, WatchingModelRef) and ref.check() is False
            )  # retried later, not re-reported
        finally:
            ref.close()
    assert len(reported) == 1
    assert reported[0].startswith("model iris/3: cannot load ")
    assert reported[0].endswith("starting on iris/2, the newest version that loads; retrying with backoff")
    assert [r.getMessage() for r in caplog.records] == [f"warning: {reported[0]}"]
    # A glob does the same; a pinned version is not second-guessed.
    folder = tmp_path / "glob"
    folder.mkdir()
    os.link(models["seven"], folder / "iris-1.joblib")
    os.link(models["corrupt"], folder / "iris-2.joblib")
    ref = open_model_ref(ModelSpec(name="iris", uri=str(folder / "iris-*.joblib"), watch=True))
    try:
        assert ref.current().model_id == "iris/1"
    finally:
        ref.close()
    with pytest.raises(ModelError):
        open_model_ref(ModelSpec(name="iris", store=store.root, version=3, watch=True))
