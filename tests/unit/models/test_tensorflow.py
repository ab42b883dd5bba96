"""SavedModel folders and .tflite files built here, against TensorFlow's own calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inferline.engine.predict import run_model
from inferline.errors import ModelError
from inferline.models.base import detect_framework, handler_for
from inferline.models.registry import load_version
from inferline.models.store import ModelStore
from inferline.pipeline import ModelSpec

pytest.importorskip("tensorflow")
from tests.tf_models import (  # noqa: E402
    save_image_classifier,
    save_price_model,
    save_tflite,
    signature_outputs,
)

IMAGES = np.random.default_rng(0).random((5, 12, 10, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tf") / "classifier"
    save_image_classifier(path)
    return path


def test_a_probability_output_makes_a_classifier(classifier: Path) -> None:
    assert detect_framework(str(classifier)) == "tensorflow"
    handler = handler_for(str(classifier))
    got = handler.predict(handler.load(str(classifier)), IMAGES)
    want = signature_outputs(classifier, image=IMAGES)["probabilities"]
    np.testing.assert_allclose(got.scores, want, rtol=1e-6)
    assert got.prediction.tolist() == want.argmax(axis=1).tolist()


def test_another_signature_gives_its_raw_feature_vector(classifier: Path) -> None:
    handler = handler_for(str(classifier), framework="tensorflow", options={"signature": "embed"})
    got = handler.predict(handler.load(str(classifier)), IMAGES)
    assert got.scores is None
    np.testing.assert_allclose(
        got.prediction, signature_outputs(classifier, "embed", image=IMAGES)["feature_vector"]
    )
    missing = handler_for(str(classifier), framework="tensorflow", options={"signature": "predict"})
    with pytest.raises(ModelError, match=r"has no signature 'predict' \(it has: embed, serving_default\)"):
        missing.load(str(classifier))


def test_named_inputs_take_their_columns_text_included(tmp_path: Path) -> None:
    save_price_model(tmp_path / "price")
    loaded = load_version(ModelSpec(name="price", uri=str(tmp_path / "price")), str(tmp_path / "price"), "1")
    assert loaded.inputs == ["area", "city", "rooms"] and loaded.text_inputs == ["city"]
    batch = pa.RecordBatch.from_pydict(
        {"city": ["paris", "lyon", None], "rooms": [3, 2, 1], "area": [50.0, 80.0, 10.0], "id": [1, 2, 3]}
    )
    out = run_model(loaded, None, batch, pa.array(["1", "2", "3"]))
    assert out.prediction is not None
    want = signature_outputs(
        tmp_path / "price",
        rooms=np.array([[3.0], [2.0]], np.float32),
        area=np.array([[50.0], [80.0]], np.float32),
        city=np.array([["paris"], ["lyon"]]),
    )["price"][:, 0]
    np.testing.assert_allclose(out.prediction.prediction, want, rtol=1e-6)
    assert [d.error for d in out.dead] == ["field 'city' is empty, expected text"]


def test_tflite_runs_any_batch_size_like_the_saved_model(classifier: Path, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    save_tflite(classifier, tmp_path / "classifier.tflite")
    handler = handler_for(str(tmp_path / "classifier.tflite"))
    model = handler.load(str(tmp_path / "classifier.tflite"))
    want = signature_outputs(classifier, image=IMAGES)["probabilities"]
    for rows in (5, 2, 5):  # resized between batches
        got = handler.predict(model, IMAGES[:rows])
        np.testing.assert_allclose(got.scores, want[:rows], rtol=1e-5, atol=1e-6)
    (tmp_path / "junk.tflite").write_bytes(b"junk")
    with pytest.raises(ModelError, match=r"junk.tflite: cannot load TFLite model \("):
        handler.load(str(tmp_path / "junk.tflite"))


def test_a_saved_model_folder_goes_into_the_store_whole(classifier: Path, tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path / "store"))
    added = store.add("resnet", str(classifier))
    again = store.add("resnet", str(classifier))
    assert added.framework == "tensorflow" and added.sha256 == again.sha256
    assert sorted(p.relative_to(added.uri) for p in Path(added.uri).rglob("*") if p.is_file()) == sorted(
        p.relative_to(classifier) for p in classifier.rglob("*") if p.is_file()
    )
    loaded = store.load("resnet")  # what the server and SQL's store lookup call
    want = signature_outputs(classifier, image=IMAGES)["probabilities"]
    np.testing.assert_allclose(loaded.predict(IMAGES).scores, want, rtol=1e-6)
