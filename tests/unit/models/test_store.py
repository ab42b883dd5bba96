"""The model store: versions, pins, removal, loading, errors, local and fsspec roots."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from inferline.errors import ModelError
from inferline.examples.iris import FEATURES
from inferline.models.store import METADATA_FILE, ModelStore, default_store


@pytest.fixture
def files(iris_example: Path, tmp_path: Path) -> dict[str, Path]:
    constant = DummyClassifier(strategy="constant", constant=2).fit(np.zeros((3, 4)), [0, 1, 2])
    joblib.dump(constant, tmp_path / "constant.joblib")
    return {
        "joblib": iris_example / "models" / "iris-1.joblib",
        "onnx": iris_example / "models" / "iris-1.onnx",
        "constant": tmp_path / "constant.joblib",
    }


def test_add_copies_the_file_with_its_metadata(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path / "store"))
    added = store.add("iris", str(files["onnx"]), inputs=FEATURES, metadata={"batch_size": 32})
    assert (added.name, added.version, added.framework) == ("iris", 1, "onnx")
    assert added.uri == str(tmp_path / "store" / "iris" / "1" / "iris-1.onnx")
    assert Path(added.uri).read_bytes() == files["onnx"].read_bytes()
    assert added.sha256 == hashlib.sha256(files["onnx"].read_bytes()).hexdigest()
    assert added.inputs == FEATURES and added.metadata == {"batch_size": 32}
    assert added.created.endswith("Z") and added.created.startswith("20")
    recorded = json.loads((tmp_path / "store/iris/1" / METADATA_FILE).read_text())
    assert recorded["sha256"] == added.sha256 and recorded["file"] == "iris-1.onnx"
    assert sorted(p.name for p in (tmp_path / "store/iris/1").iterdir()) == ["inferline.json", "iris-1.onnx"]


def test_versions_are_monotonic_and_never_reused(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    assert store.names() == []
    for _ in range(3):
        store.add("iris", str(files["joblib"]))
    store.remove("iris", 3)
    assert store.add("iris", str(files["onnx"])).version == 4
    assert [v.version for v in store.versions("iris")] == [1, 2, 4]
    assert store.current("iris").version == 4
    assert store.get("iris").version == 4 and store.get("iris", 2).version == 2
    assert store.names() == ["iris"]


def test_pin_makes_a_version_current_until_unpinned(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))
    store.add("iris", str(files["constant"]))
    assert store.pinned("iris") is None
    store.pin("iris", 1)
    assert store.pinned("iris") == 1 and store.current("iris").version == 1
    store.add("iris", str(files["onnx"]))
    assert store.current("iris").version == 1
    store.unpin("iris")
    assert store.pinned("iris") is None and store.current("iris").version == 3
    store.unpin("iris")  # already unpinned: a no-op


def test_load_gives_a_model_whose_version_is_the_number(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]), inputs=FEATURES, metadata={"labels": ["a", "b", "c"]})
    store.add("iris", str(files["constant"]))
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    first = store.load("iris", 1)
    assert first.model_id == "iris/1" and first.inputs == FEATURES
    assert first.metadata == {"labels": ["a", "b", "c"]}
    assert first.predict(rows).prediction.tolist() == [0, 2]
    newest = store.load("iris", inputs=["x"])
    assert newest.model_id == "iris/2" and newest.inputs == ["x"]
    assert newest.predict(rows).prediction.tolist() == [2, 2]


def test_partial_versions_are_invisible(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))
    (tmp_path / "iris" / "2").mkdir()  # a copy in progress: no metadata yet
    (tmp_path / "iris" / "2" / "iris.joblib").write_bytes(b"half")
    assert [v.version for v in store.versions("iris")] == [1]
    assert store.current("iris").version == 1
    assert store.add("iris", str(files["joblib"])).version == 3


def test_remove_whole_model_and_pinned_version(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))
    store.add("iris", str(files["joblib"]))
    store.pin("iris", 2)
    with pytest.raises(
        ModelError, match=r"iris/2 is pinned; unpin it first with: inferline models unpin iris"
    ):
        store.remove("iris", 2)
    store.remove("iris")
    assert store.names() == []


def test_concurrent_adds_get_distinct_numbers(tmp_path: Path, files: dict[str, Path]) -> None:
    store_root = str(tmp_path)
    numbers: list[int] = []

    def add() -> None:
        numbers.append(ModelStore(store_root).add("iris", str(files["joblib"])).version)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == [1, 2, 3, 4]


def test_fsspec_root(files: dict[str, Path]) -> None:
    bucket = f"store-{uuid.uuid4().hex}"
    store = ModelStore(f"memory://{bucket}")
    added = store.add("iris", str(files["onnx"]))
    assert added.uri == f"memory:///{bucket}/iris/1/iris-1.onnx"
    assert store.names() == ["iris"] and store.uri_of("iris").startswith("memory://")
    assert store.load("iris").model_id == "iris/1"


def test_unknown_model_names_the_store_and_what_exists(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    with pytest.raises(
        ModelError, match=r"model store .*: no model 'iris' \(the store is empty\); add it with"
    ):
        store.versions("iris")
    store.add("iris", str(files["joblib"]))
    with pytest.raises(ModelError, match=r"no model 'digits' \(have: iris\)"):
        store.current("digits")
    with pytest.raises(ModelError, match=r"no model 'digits' \(have: iris\)"):
        store.pin("digits", 1)
    with pytest.raises(ModelError, match=r"no model 'digits'"):
        store.unpin("digits")
    with pytest.raises(ModelError, match=r"no model 'digits'"):
        store.remove("digits")


def test_unknown_version_lists_the_versions(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))
    with pytest.raises(ModelError, match=r"model 'iris' has no version 7 \(have: 1\); see: inferline models"):
        store.get("iris", 7)
    with pytest.raises(ModelError, match=r"has no version 7"):
        store.pin("iris", 7)
    with pytest.raises(ModelError, match=r"has no version 7"):
        store.remove("iris", 7)


def test_a_model_with_no_versions_left(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))
    store.remove("iris", 1)
    assert store.versions("iris") == []
    with pytest.raises(ModelError, match=r"model 'iris' has no versions; add one with: inferline models add"):
        store.current("iris")


def test_bad_inputs_to_add(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    with pytest.raises(ModelError, match=r"model name 'my model': expected letters, digits"):
        store.add("my model", str(files["joblib"]))
    with pytest.raises(ModelError, match=r"model file .*missing.onnx: not found"):
        store.add("iris", str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelError, match=r"unknown model format '.txt'"):
        store.add("iris", str(tmp_path / "notes.txt"))
    assert store.names() == []


def test_corrupt_metadata_and_pin_files(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))
    (tmp_path / "iris" / "pinned").write_text("latest")
    with pytest.raises(ModelError, match=r"pinned holds 'latest', expected a version number"):
        store.current("iris")
    (tmp_path / "iris" / "pinned").unlink()
    (tmp_path / "iris" / "1" / METADATA_FILE).write_text("{not json")
    with pytest.raises(
        ModelError, match=r"inferline.json is not valid JSON .*inferline models remove iris 1"
    ):
        store.versions("iris")


def test_default_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERLINE_STORE", raising=False)
    assert default_store() == "model_store"
    monkeypatch.setenv("INFERLINE_STORE", "/srv/models")
    assert default_store() == "/srv/models"


def test_unknown_framework_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    with pytest.raises(
        ModelError, match=r"unknown framework 'caffe'; expected one of catboost, huggingface, keras"
    ):
        store.add("iris", str(files["onnx"]), framework="caffe")


def test_a_failed_copy_leaves_no_half_version(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(str(tmp_path))
    store.add("iris", str(files["joblib"]))

    fs, _ = store._filesystem()
    real_mv = fs.mv

    def mv_failing_for_models(source: str, target: str, **kwargs: object) -> None:
        if target.endswith(".joblib"):
            raise OSError("disk full")
        real_mv(source, target, **kwargs)

    monkeypatch.setattr(fs, "mv", mv_failing_for_models)
    with pytest.raises(OSError, match="disk full"):
        store.add("iris", str(files["joblib"]))
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "iris").iterdir()) == ["1", "last_version"]
    assert store.add("iris", str(files["joblib"])).version == 3


def test_metadata_options_reach_only_handlers_that_take_them(tmp_path: Path, files: dict[str, Path]) -> None:
    store = ModelStore(str(tmp_path))
    # `scores` and `device` are handler options; sklearn takes `scores` but has no `device`.
    store.add("iris", str(files["constant"]), metadata={"scores": False, "device": "cuda", "task": "x"})
    loaded = store.load("iris")
    assert loaded.handler.scores is False  # type: ignore[attr-defined]
    assert loaded.predict(np.zeros((1, 4))).scores is None
    # What the caller passes wins over the metadata; None leaves the metadata's value.
    assert store.load("iris", handler_options={"scores": True}).predict(np.zeros((1, 4))).scores is not None
    assert store.load("iris", handler_options={"scores": None}).predict(np.zeros((1, 4))).scores is None
