"""The training rows through BigQuery's automatic preprocessing (data.preprocessor's
ColumnTransformer) in whole columns: the same fitted ColumnTransformer and the same matrix as
`preprocess.fit_transform(data.feature_matrix(table, ...))`, without the object matrix.

The object matrix ML.PREDICT feeds (numbers boxed beside strings) is what the saved Pipeline
takes, but fitting on it costs more than the fit itself: scikit-learn converts each boxed number
back and encodes each string with a dict lookup. Here the numbers go through the numeric
Pipeline as one float64 matrix, and the strings are encoded from Arrow's hash lookups
(`index_in` against the sorted categories). The categorical Pipeline learns its categories by
fitting on a few rows that hold each category once (one-hot/label encoding only learns the
sorted distinct values), so the saved Pipeline is the one scikit-learn would fit on all rows.

Example:
    >>> import pyarrow as pa
    >>> from inferline.sql.training.options import TrainOptions
    >>> table = pa.table({"x": [1.0, 3.0], "c": ["b", "a"]})
    >>> preprocess = data.preprocessor(TrainOptions("linear_reg", "y"), ["x", "c"], ["c"])
    >>> x, means = fit_transform(preprocess, table, ["x", "c"], ["c"])
    >>> x.tolist(), means.tolist()
    ([[-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], [0.0, 0.5, 0.5])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.sql.training import data


def fit_transform(
    preprocess: Any, table: pa.Table, features: list[str], text: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Fit `preprocess` on the rows; their processed matrix and its column means (from the
    parts: the numbers' block and the categories' counts, not another pass over the matrix)."""
    numeric = [name for name in features if name not in text]
    numbers = _numbers(table, numeric)
    categories = [_sorted_values(table.column(name)) for name in text]
    preprocess.fit(_few_rows(features, text, categories))
    scaling = preprocess.named_transformers_.get("numeric")
    # An infinity fails here with scikit-learn's own error.
    block = scaling.fit_transform(numbers) if scaling is not None else None
    if block is not None and block.shape[1] < len(numeric):
        # A column without a value, which the imputer drops (and warns about): scikit-learn's
        # own path, with its own outcome.
        matrix = np.asarray(preprocess.fit_transform(data.feature_matrix(table, features, text)))
        return matrix, matrix.mean(axis=0)
    return _assemble(preprocess, table, text, block)


def transform(preprocess: Any, table: pa.Table, features: list[str], text: list[str]) -> np.ndarray:
    """The rows through a fitted `preprocess`, as `preprocess.transform(feature_matrix(...))`."""
    numeric = [name for name in features if name not in text]
    scaling = preprocess.named_transformers_.get("numeric")
    block = scaling.transform(_numbers(table, numeric)) if scaling is not None else None
    return _assemble(preprocess, table, text, block)[0]


def _numbers(table: pa.Table, names: list[str]) -> np.ndarray:
    """The numeric columns as one float64 matrix, NULL as NaN."""
    matrix = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        floats = pc.cast(table.column(name), pa.float64()).fill_null(math.nan)
        matrix[:, j] = floats.to_numpy(zero_copy_only=False)
    return matrix


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # data.preprocessor's imputer makes a NULL string the category ''.
    return column.fill_null("")


def _sorted_values(column: pa.ChunkedArray) -> list[str]:
    # Python's order, as scikit-learn sorts an object column's categories.
    return sorted(str(v) for v in pc.unique(_text(column)).to_pylist())


def _few_rows(features: list[str], text: list[str], categories: list[list[str]]) -> np.ndarray:
    """Rows holding each string column's categories at least once (numbers 0: refitted after)."""
    count = max([2, *(len(values) for values in categories)])
    rows = np.zeros((count, len(features)), dtype=object if text else np.float64)
    for name, values in zip(text, categories, strict=True):
        rows[:, features.index(name)] = [values[i % len(values)] for i in range(count)]
    return rows


def _assemble(
    preprocess: Any, table: pa.Table, text: list[str], block: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The ColumnTransformer's output (the numeric block, then each string column encoded) and
    its column means."""
    spans = preprocess.output_indices_
    width = max(s.stop for s in spans.values())
    matrix = np.zeros((table.num_rows, width), dtype=np.float64)
    means = np.zeros(width, dtype=np.float64)
    if block is not None:
        matrix[:, spans["numeric"]] = block
        means[spans["numeric"]] = block.mean(axis=0)
    if not text:
        return matrix, means
    encoder = preprocess.named_transformers_["categorical"].named_steps["encode"]
    one_hot = type(encoder).__name__ == "OneHotEncoder"
    rows = np.arange(table.num_rows)
    start = spans["categorical"].start
    for name, values in zip(text, encoder.categories_, strict=True):
        column = _text(table.column(name))
        found = pc.index_in(column, value_set=pa.array([str(v) for v in values], type=column.type))
        codes = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.float64)  # unseen: NaN
        if not one_hot:  # label encoding; an unseen value is missing (NaN), as the encoder's
            matrix[:, start] = codes
            means[start] = codes.mean()
            start += 1
            continue
        seen = ~np.isnan(codes)  # one-hot: an unseen value encodes as all zeros
        known = codes[seen].astype(np.int64)
        matrix[rows[seen], start + known] = 1.0
        means[start : start + len(values)] = np.bincount(known, minlength=len(values)) / table.num_rows
        start += len(values)
    return matrix, means
