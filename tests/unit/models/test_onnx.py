"""ONNX graphs with several inputs (one per column, text too) and with a fixed batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inferline.engine.predict import run_model
from inferline.errors import InputError, ModelError
from inferline.models.registry import load_version
from inferline.pipeline import ModelSpec
from tests.onnx_models import FEATURES, fixed_batch_export, iris_frame, per_column_pipeline

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")


def test_each_graph_input_is_fed_the_column_of_its_name(tmp_path: Path) -> None:
    sklearn_model = per_column_pipeline(tmp_path / "iris.onnx", with_text=True)
    loaded = load_version(
        ModelSpec(name="iris", uri=str(tmp_path / "iris.onnx")), str(tmp_path / "iris.onnx"), "1"
    )
    assert loaded.inputs == [*FEATURES, "garden"] and loaded.text_inputs == ["garden"]
    frame = iris_frame()
    # Columns in another order, plus one the model does not take.
    batch = pa.RecordBatch.from_pandas(
        frame[["garden", "species", *reversed(FEATURES)]], preserve_index=False
    )
    out = run_model(loaded, None, batch, pa.array([str(i) for i in range(len(frame))]))
    assert out.prediction is not None and not out.dead
    want = sklearn_model.predict_proba(frame[[*FEATURES, "garden"]])
    np.testing.assert_allclose(out.prediction.scores, want, atol=1e-5)
    assert out.prediction.prediction.tolist() == want.argmax(axis=1).tolist()


def test_inputs_may_map_graph_inputs_to_other_columns(tmp_path: Path) -> None:
    sklearn_model = per_column_pipeline(tmp_path / "iris.onnx", with_text=False)
    mapping = {"sepal_length": "sl", "sepal_width": "sw", "petal_length": "pl", "petal_width": "pw"}
    spec = ModelSpec(name="iris", uri=str(tmp_path / "iris.onnx"), inputs=dict(reversed(mapping.items())))
    loaded = load_version(spec, str(tmp_path / "iris.onnx"), "1")
    assert loaded.inputs == ["sl", "sw", "pl", "pw"]
    frame = iris_frame()
    renamed = frame[FEATURES].rename(columns=mapping)
    batch = pa.RecordBatch.from_pandas(renamed, preserve_index=False)
    out = run_model(loaded, None, batch, pa.array([str(i) for i in range(len(frame))]))
    assert out.prediction is not None
    np.testing.assert_allclose(out.prediction.scores, sklearn_model.predict_proba(frame[FEATURES]), atol=1e-5)

    wrong = ModelSpec(name="iris", uri=str(tmp_path / "iris.onnx"), inputs={"petals": "pl"})
    with pytest.raises(ModelError, match=r"model iris: inputs: names petals that the model does not take"):
        load_version(wrong, str(tmp_path / "iris.onnx"), "1")
    with pytest.raises(
        InputError, match=r"the model takes 4 inputs \(sepal_length, .*\), one column each, but got 2"
    ):
        loaded.predict(np.zeros((3, 2)))


@pytest.mark.parametrize("batch", [1, 3])
def test_a_fixed_batch_runs_any_batch_in_slices(tmp_path: Path, batch: int) -> None:
    torch = pytest.importorskip("torch")
    model = fixed_batch_export(tmp_path / "fixed.onnx", batch)
    loaded = load_version(
        ModelSpec(name="fixed", uri=str(tmp_path / "fixed.onnx")), str(tmp_path / "fixed.onnx"), "1"
    )
    rows = np.random.default_rng(0).random((8, 4))
    with torch.inference_mode():
        want = model(torch.from_numpy(rows).float()).numpy()  # type: ignore[operator]
    got = loaded.predict(rows)  # 8 rows: slices of 1, or 3 + 3 + 2 padded to 3
    assert loaded.model.get_inputs()[0].shape == [batch, 4]
    np.testing.assert_allclose(got.prediction, want, atol=1e-5)
