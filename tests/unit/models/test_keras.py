"""The Keras handler (Keras 3 on torch) against a tiny model trained here, as .keras and .h5."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferline.errors import MissingExtraError, ModelError
from inferline.models.keras import KerasHandler, keras_module
from inferline.models.registry import load_model
from inferline.pipeline import ModelSpec
from tests.lazy import without_cuda


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    keras = keras_module()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64) + (x[:, 2] > 0.5)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "tiny-1.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 ... is considered legacy"
        model.save(folder / "tiny-2.h5")
    return model, folder


def test_keras_backend_is_torch() -> None:
    assert keras_module().backend.backend() == os.environ["KERAS_BACKEND"] == "torch"


@pytest.mark.parametrize("name", ["tiny-1.keras", "tiny-2.h5"])
def test_predictions_equal_model_predict(trained: tuple[Any, Path], name: str) -> None:
    model, folder = trained
    rows = np.random.default_rng(1).random((10, 4))  # float64, as CSV features arrive
    expected = model.predict(rows.astype(np.float32), verbose=0)
    handler = KerasHandler()
    got = handler.predict(handler.load(str(folder / name)), rows)
    np.testing.assert_array_equal(got.prediction, expected.argmax(axis=1))
    assert got.scores is not None
    np.testing.assert_allclose(got.scores, expected, rtol=1e-5, atol=1e-6)


def test_registry_loads_keras_by_suffix_with_raw_output(trained: tuple[Any, Path]) -> None:
    model, folder = trained
    loaded = load_model(ModelSpec(name="tiny", uri=str(folder / "tiny-1.keras"), output="raw"))
    rows = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(rows).prediction, model.predict(rows, verbose=0), rtol=1e-5)


def test_corrupt_keras_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"broken\.keras: cannot load Keras model \("):
        KerasHandler().load(str(path))


def test_missing_keras_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(MissingExtraError, match=r"keras is not installed: pip install 'inferline\[keras\]'"):
        KerasHandler().load(str(tmp_path / "m.keras"))


def test_image_pipeline_feeds_nhwc_float32_to_a_keras_cnn(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from PIL import Image

    from inferline.engine.local import LocalEngine
    from inferline.io.images import ImageSettings, decode_image
    from inferline.pipeline import parse_spec

    keras = keras_module()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.save(tmp_path / "cnn.keras")
    rng = np.random.default_rng(2)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    spec = parse_spec(
        {
            "source": {
                "kind": "images",
                "path": str(tmp_path / "*.png"),
                "resize": [8, 8],
                "layout": "NHWC",
                "scale": 255,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.25, 0.25, 0.25],
            },
            "model": {"name": "cnn", "uri": str(tmp_path / "cnn.keras")},
            "sink": {"kind": "parquet", "path": str(tmp_path / "out.parquet")},
        }
    )
    summary = LocalEngine(spec).run()
    assert summary.rows_predicted == 5
    table = pq.read_table(tmp_path / "out.parquet").sort_by("key")
    settings = ImageSettings(resize=(8, 8), layout="NHWC", scale=255, mean=(0.5,) * 3, std=(0.25,) * 3)
    pixels = np.stack([decode_image((tmp_path / f"{i}.png").read_bytes(), settings) for i in range(5)])
    expected = model.predict(pixels, verbose=0)
    # Its last layer is a plain Dense: no classifier, the three outputs come back as they are.
    np.testing.assert_allclose(table["prediction"].to_pylist(), expected, rtol=1e-5, atol=1e-6)
    assert table.column_names == ["key", "uri", "width", "height", "prediction", "model_id"]


@without_cuda
def test_keras_cuda_without_cuda_is_a_clear_error(trained: tuple[Any, Path]) -> None:
    _, folder = trained
    with pytest.raises(ModelError, match=r"tiny-1\.keras: device cuda requested but CUDA is not available"):
        KerasHandler(device="cuda").load(str(folder / "tiny-1.keras"))


def test_a_functional_model_with_two_outputs_gives_each_under_its_layer_name(tmp_path: Path) -> None:
    keras = keras_module()
    keras.utils.set_random_seed(0)
    features = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu")(features)
    heads = [keras.layers.Dense(1, name="price")(hidden), keras.layers.Dense(3, name="embedding")(hidden)]
    model = keras.Model(features, heads)
    model.save(tmp_path / "heads.keras")
    rows = np.random.default_rng(3).random((5, 4), dtype=np.float32)
    price, embedding = model.predict_on_batch(rows)
    handler = KerasHandler()
    got = handler.predict(handler.load(str(tmp_path / "heads.keras")), rows)
    assert got.outputs is not None and list(got.outputs) == ["price", "embedding"]
    np.testing.assert_allclose(got.outputs["price"], np.asarray(price)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got.outputs["embedding"], np.asarray(embedding), rtol=1e-6)
