"""Model calls inside UDF calls: image chunks in slices, torch threads by what else is running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import inferline.sql
from inferline.models.base import LoadedModel, Prediction
from inferline.models.torch import TorchHandler
from inferline.sql import calls
from inferline.sql.decode import decode
from tests.lazy import LazyModule

torch = LazyModule("torch")
digits = LazyModule("inferline.examples.digits")  # imports torch


class CountingTorch(TorchHandler):
    """The real torch handler, remembering how many rows each call got."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        self.rows.append(len(inputs))
        return super().predict(model, inputs)


@pytest.fixture(scope="module")
def cnn(digits_example: Path) -> LoadedModel:
    handler = CountingTorch()
    uri = str(digits_example / "models" / "digits-1.pts")
    return LoadedModel(name="digits", version="1", uri=uri, handler=handler, model=handler.load(uri))


def test_image_chunks_reach_the_model_in_slices_with_the_same_results(cnn: LoadedModel) -> None:
    images = np.random.default_rng(0).random((600, 1, 28, 28), dtype=np.float32)
    whole = cnn.predict(images)
    handler = cnn.handler
    assert isinstance(handler, CountingTorch)
    handler.rows.clear()
    sliced = calls.predict_sliced(cnn, images)
    assert handler.rows == [167, 167, 167, 99]  # 512 KiB of 28x28x1 float32 images per call
    np.testing.assert_array_equal(sliced.prediction, whole.prediction)
    assert sliced.scores is not None and whole.scores is not None
    np.testing.assert_allclose(sliced.scores, whole.scores, rtol=1e-5, atol=1e-7)


def test_feature_rows_and_other_frameworks_get_the_whole_chunk() -> None:
    images = np.zeros((2048, 28, 28, 1), dtype=np.float32)
    assert calls.slice_rows(images, "torch") == 167
    assert calls.slice_rows(images, "keras") == 167
    assert calls.slice_rows(images, "sklearn") == 2048
    assert calls.slice_rows(images, "remote") == 2048
    assert calls.slice_rows(np.zeros((2048, 64)), "onnx") == 2048
    assert calls.slice_rows(np.zeros((2048, 3, 224, 224), dtype=np.float32), "torch") == calls.MIN_SLICE_ROWS
    assert calls.slice_rows(images[:100], "torch") == 100
    assert calls.slice_rows(images[:0], "torch") == 1


def test_torch_uses_all_its_threads_unless_another_udf_call_runs() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs torch on one thread (conftest): make "all" differ from one
    try:
        _check_torch_threads()
    finally:
        torch.set_num_threads(before)
        with calls.torch_threads():  # from the main thread: the setting UDF calls start from again
            pass


def _check_torch_threads() -> None:
    default = torch.get_num_threads()
    with calls.udf_call(), calls.torch_threads() as alone:
        assert alone == default == torch.get_num_threads()
    with calls.udf_call(), calls.udf_call():  # e.g. decode_image on another DuckDB thread
        assert calls.running_calls() == 2
        with calls.torch_threads() as shared:
            assert shared == 1 == torch.get_num_threads()
        assert torch.get_num_threads() == default
    assert calls.running_calls() == 0


def test_sql_over_an_object_table_equals_the_model_on_all_images_at_once(
    digits_example: Path, tmp_path: Path
) -> None:
    files = digits.write_pngs(str(tmp_path / "png"), 400)
    model_path = digits_example / "models" / "digits-1.pts"
    with inferline.sql.connect() as con:
        con.sql(
            f"CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{tmp_path}/png/*.png'], "
            "object_metadata='SIMPLE');"
            f"CREATE MODEL ds.digits OPTIONS(model_type='pytorch', model_path='{model_path}')"
        )
        native = con.raw.sql(
            "SELECT uri, predict_scores('ds.digits', decode_image(data)) AS s FROM ds.images ORDER BY uri"
        ).fetchall()
        relation = con.sql(
            "SELECT uri, predicted_label, probabilities FROM ML.PREDICT(MODEL ds.digits, "
            "(SELECT uri, ML.DECODE_IMAGE(data) AS image FROM ds.images)) ORDER BY uri"
        )
        assert relation is not None
        bigquery = relation.fetchall()
    assert [uri for uri, _ in native] == files
    pixels = np.stack([decode(Path(f).read_bytes()) for f in files]).transpose(0, 3, 1, 2)
    handler = TorchHandler()
    expected = handler.predict(handler.load(str(model_path)), pixels)
    assert expected.scores is not None
    np.testing.assert_allclose([s for _, s in native], expected.scores, rtol=1e-5, atol=1e-7)
    assert [label for _, label, _ in bigquery] == expected.prediction.tolist()
    np.testing.assert_allclose([p for *_, p in bigquery], expected.scores, rtol=1e-5, atol=1e-7)
