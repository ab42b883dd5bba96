"""SavedModel folders and .tflite files built here, against TensorFlow's own calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inferline.engine.predict import results_for, run_model
from inferline.errors import ModelError
from inferline.models.base import detect_framework, handler_for
from inferline.models.registry import load_version
from inferline.models.store import ModelStore
from inferline.pipeline import ModelSpec
from tests.lazy import LazyModule, requires

tf_models = LazyModule("tests.tf_models")  # imports TensorFlow: only when a test runs
pytestmark = requires("tensorflow")

IMAGES = np.random.default_rng(0).random((5, 12, 10, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tf") / "classifier"
    tf_models.save_image_classifier(path)
    return path


def test_a_probability_output_makes_a_classifier(classifier: Path) -> None:
    assert detect_framework(str(classifier)) == "tensorflow"
    handler = handler_for(str(classifier))
    got = handler.predict(handler.load(str(classifier)), IMAGES)
    want = tf_models.signature_outputs(classifier, image=IMAGES)["probabilities"]
    np.testing.assert_allclose(got.scores, want, rtol=1e-6)
    assert got.prediction.tolist() == want.argmax(axis=1).tolist()


def test_another_signature_gives_its_raw_feature_vector(classifier: Path) -> None:
    handler = handler_for(str(classifier), framework="tensorflow", options={"signature": "embed"})
    got = handler.predict(handler.load(str(classifier)), IMAGES)
    assert got.scores is None
    np.testing.assert_allclose(
        got.prediction, tf_models.signature_outputs(classifier, "embed", image=IMAGES)["feature_vector"]
    )
    missing = handler_for(str(classifier), framework="tensorflow", options={"signature": "predict"})
    with pytest.raises(ModelError, match=r"has no signature 'predict' \(it has: embed, serving_default\)"):
        missing.load(str(classifier))


def test_named_inputs_take_their_columns_text_included(tmp_path: Path) -> None:
    tf_models.save_price_model(tmp_path / "price")
    loaded = load_version(ModelSpec(name="price", uri=str(tmp_path / "price")), str(tmp_path / "price"), "1")
    assert loaded.inputs == ["area", "city", "rooms"] and loaded.text_inputs == ["city"]
    batch = pa.RecordBatch.from_pydict(
        {"city": ["paris", "lyon", None], "rooms": [3, 2, 1], "area": [50.0, 80.0, 10.0], "id": [1, 2, 3]}
    )
    out = run_model(loaded, None, batch, pa.array(["1", "2", "3"]))
    assert out.prediction is not None
    want = tf_models.signature_outputs(
        tmp_path / "price",
        rooms=np.array([[3.0], [2.0]], np.float32),
        area=np.array([[50.0], [80.0]], np.float32),
        city=np.array([["paris"], ["lyon"]]),
    )["price"][:, 0]
    np.testing.assert_allclose(out.prediction.prediction, want, rtol=1e-6)
    assert [d.error for d in out.dead] == ["field 'city' is empty, expected text"]


def test_tflite_runs_any_batch_size_like_the_saved_model(classifier: Path, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    tf_models.save_tflite(classifier, tmp_path / "classifier.tflite")
    handler = handler_for(str(tmp_path / "classifier.tflite"))
    model = handler.load(str(tmp_path / "classifier.tflite"))
    want = tf_models.signature_outputs(classifier, image=IMAGES)["probabilities"]
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
    want = tf_models.signature_outputs(classifier, image=IMAGES)["probabilities"]
    np.testing.assert_allclose(loaded.predict(IMAGES).scores, want, rtol=1e-6)


FEATURES = (np.random.default_rng(4).random((7, 4), dtype=np.float32) * 4 - 2).astype(np.float32)
COLUMNS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A SavedModel classifier with a second output (embedding), and its TFLite conversion."""
    pytest.importorskip("ai_edge_litert")
    root = tmp_path_factory.mktemp("tf-two")
    tf_models.save_classes_and_embedding(root / "saved")
    tf_models.save_tflite(root / "saved", root / "two.tflite")
    return root / "saved", root / "two.tflite"


def _rows(path: Path, **options: object) -> pa.RecordBatch:
    """The result rows a pipeline writes for FEATURES with this model spec."""
    spec = ModelSpec(name="two", uri=str(path), inputs=COLUMNS, **options)  # type: ignore[arg-type]
    loaded = load_version(spec, str(path), "1")
    data = pa.RecordBatch.from_pydict({name: FEATURES[:, j] for j, name in enumerate(COLUMNS)})
    keys = pa.array([str(i) for i in range(len(FEATURES))])
    results, dead = results_for([loaded], [None], data, keys, keep=[])
    assert results is not None and not dead
    return results


def test_a_classifier_with_two_outputs_gives_the_other_one_a_column(two_outputs: tuple[Path, Path]) -> None:
    saved, lite = two_outputs
    wants = {
        saved: tf_models.signature_outputs(saved, features=FEATURES),
        lite: tf_models.interpreter_outputs(lite, features=FEATURES),
    }
    for path, want in wants.items():
        rows = _rows(path)
        assert rows.schema.names == ["key", "prediction", "scores", "embedding", "model_id"], path
        assert rows.column("prediction").to_pylist() == want["probabilities"].argmax(axis=1).tolist()
        np.testing.assert_allclose(rows.column("scores").to_pylist(), want["probabilities"], rtol=1e-6)
        np.testing.assert_allclose(rows.column("embedding").to_pylist(), want["embedding"], rtol=1e-6)
    # TFLite equals TensorFlow's own answers too (the same weights, converted).
    np.testing.assert_allclose(wants[lite]["embedding"], wants[saved]["embedding"], rtol=1e-4, atol=1e-5)


def test_tflite_with_two_outputs_gives_each_raw_or_those_outputs_selects(
    two_outputs: tuple[Path, Path],
) -> None:
    saved, lite = two_outputs
    want = tf_models.interpreter_outputs(lite, features=FEATURES)
    raw = _rows(lite, output="raw")
    assert raw.schema.names == ["key", "probabilities", "embedding", "model_id"]
    np.testing.assert_allclose(raw.column("probabilities").to_pylist(), want["probabilities"], rtol=1e-6)
    np.testing.assert_allclose(raw.column("embedding").to_pylist(), want["embedding"], rtol=1e-6)
    for path in (saved, lite):
        assert _rows(path, outputs=["probabilities"]).schema.names == [
            "key",
            "prediction",
            "scores",
            "model_id",
        ]
        assert _rows(path, outputs=["embedding"]).schema.names == ["key", "prediction", "model_id"]
        with pytest.raises(ModelError, match=r"outputs: names logits, which the model does not give \(its "):
            _rows(path, outputs=["logits"])
