"""sql/training/matrix.py: the column-wise preprocessing equals scikit-learn's fit on the object
matrix ML.PREDICT feeds (same fitted ColumnTransformer, same matrix)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from sklearn.base import clone

from inferline.sql.training import data, matrix
from inferline.sql.training.options import TrainOptions

FEATURES = ["x", "n", "colour", "city"]
TEXT = ["colour", "city"]


def _table() -> pa.Table:
    return pa.table(
        {
            "x": pa.array([1.5, None, -2.0, 4.0, 0.25, 3.0], pa.float64()),
            "n": pa.array([3, 1, None, 7, 7, 2], pa.int32()),
            "colour": pa.array(["red", "blue", None, "red", "green", ""], pa.string()),
            "city": pa.array(["Oslo", "Lima", "Lima", "Baku", None, "Oslo"], pa.large_string()),
        }
    )


def _both(model_type: str, table: pa.Table, features: list[str], text: list[str]) -> tuple[object, object]:
    options = TrainOptions(model_type, "y")
    return data.preprocessor(options, features, text), data.preprocessor(options, features, text)


@pytest.mark.parametrize("model_type", ["linear_reg", "boosted_tree_classifier", "kmeans"])
def test_fit_transform_equals_scikit_learn_on_the_object_matrix(model_type: str) -> None:
    table = _table()
    ours, theirs = _both(model_type, table, FEATURES, TEXT)
    x, means = matrix.fit_transform(ours, table, FEATURES, TEXT)
    expected = theirs.fit_transform(data.feature_matrix(table, FEATURES, TEXT))
    np.testing.assert_allclose(x, expected, rtol=1e-12)
    np.testing.assert_allclose(means, expected.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_equal(
        ours.named_transformers_["numeric"][0].statistics_,
        theirs.named_transformers_["numeric"][0].statistics_,
    )
    for mine, scikit in zip(
        ours.named_transformers_["categorical"][-1].categories_,
        theirs.named_transformers_["categorical"][-1].categories_,
        strict=True,
    ):
        assert mine.tolist() == scikit.tolist()
    # New rows (an unseen category, NULLs) through the saved Pipeline as ML.PREDICT feeds them.
    new = pa.table(
        {
            "x": pa.array([None, 9.0], pa.float64()),
            "n": pa.array([2, None], pa.int32()),
            "colour": pa.array(["purple", None], pa.string()),
            "city": pa.array(["Lima", "Quito"], pa.large_string()),
        }
    )
    raw = data.feature_matrix(new, FEATURES, TEXT)
    np.testing.assert_allclose(ours.transform(raw), theirs.transform(raw), rtol=1e-12)
    np.testing.assert_allclose(matrix.transform(ours, new, FEATURES, TEXT), theirs.transform(raw), rtol=1e-12)


@pytest.mark.parametrize(("features", "text"), [(["x", "n"], []), (["colour", "city"], TEXT)])
def test_numbers_only_and_strings_only(features: list[str], text: list[str]) -> None:
    table = _table()
    ours, theirs = _both("logistic_reg", table, features, text)
    x, means = matrix.fit_transform(ours, table, features, text)
    np.testing.assert_allclose(means, x.mean(axis=0), atol=1e-15)
    np.testing.assert_allclose(
        x, theirs.fit_transform(data.feature_matrix(table, features, text)), rtol=1e-12
    )


def test_an_infinity_or_an_empty_column_takes_scikit_learns_path() -> None:
    infinite = _table().set_column(0, "x", pa.array([1.0, math.inf, 2.0, 3.0, 4.0, 5.0]))
    ours, _ = _both("linear_reg", infinite, FEATURES, TEXT)
    with pytest.raises(ValueError, match="infinity"):
        matrix.fit_transform(ours, infinite, FEATURES, TEXT)
    empty = _table().set_column(0, "x", pa.array([None] * 6, pa.float64()))
    ours, theirs = _both("linear_reg", empty, FEATURES, TEXT)
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        expected = clone(theirs).fit_transform(data.feature_matrix(empty, FEATURES, TEXT))
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        np.testing.assert_allclose(matrix.fit_transform(ours, empty, FEATURES, TEXT)[0], expected)
