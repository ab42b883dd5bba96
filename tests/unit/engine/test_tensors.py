"""Tensor columns in Arrow, and how features/assemble treat them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from inferline.engine.features import assemble, extract_features
from inferline.engine.tensors import tensor_column, tensor_field, tensor_matrix, tensor_shape
from inferline.models.base import Prediction


def _batch(n: int = 5) -> pa.RecordBatch:
    stacked = np.arange(n * 2 * 3 * 4, dtype=np.float32).reshape(n, 2, 3, 4)
    field, column = tensor_column("image", stacked)
    schema = pa.schema([("uri", pa.string()), ("width", pa.int32()), field])
    uris = pa.array([f"img{i}.png" for i in range(n)])
    return pa.RecordBatch.from_arrays([uris, pa.array(range(n), pa.int32()), column], schema=schema)


def test_round_trip_keeps_shape_and_float32_without_copying() -> None:
    stacked = np.random.default_rng(0).random((3, 1, 2, 2), dtype=np.float32)
    field, column = tensor_column("t", stacked)
    assert tensor_shape(field) == (1, 2, 2)
    back = tensor_matrix(column, (1, 2, 2))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, stacked)


def test_plain_lists_and_inconsistent_metadata_are_not_tensors() -> None:
    assert tensor_shape(pa.field("x", pa.list_(pa.float32(), 4))) is None
    bad = tensor_field("x", (2, 2)).with_type(pa.list_(pa.float32(), 5))
    assert tensor_shape(bad) is None


def test_features_take_the_single_tensor_column_of_a_sliced_filtered_batch() -> None:
    batch = _batch().slice(1, 4).filter(pa.array([True, False, True, True]))
    features = extract_features(batch, [])
    assert features.matrix.dtype == np.float32
    assert features.matrix.shape == (3, 2, 3, 4)
    np.testing.assert_array_equal(features.matrix[:, 0, 0, 0], [24, 72, 96])
    named = extract_features(batch, ["image"])
    np.testing.assert_array_equal(named.matrix, features.matrix)


def test_null_tensor_rows_are_marked_bad() -> None:
    batch = _batch(3)
    column = batch.column("image")
    with_null = pa.FixedSizeListArray.from_arrays(column.values, 24, mask=pa.array([False, True, False]))
    batch = batch.set_column(2, batch.schema.field("image"), with_null)
    features = extract_features(batch, [])
    assert features.errors == {1: "field 'image' is empty, expected a tensor"}
    assert features.matrix.shape == (2, 2, 3, 4)


def test_results_leave_out_tensor_columns_unless_kept() -> None:
    batch = _batch(2)
    prediction = Prediction(np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]]))
    out = assemble(batch, batch.column("uri"), prediction, "m/1")
    assert out.schema.names == ["key", "uri", "width", "prediction", "scores", "model_id"]
    kept = assemble(batch, batch.column("uri"), prediction, "m/1", keep=["image"])
    assert "image" in kept.schema.names
