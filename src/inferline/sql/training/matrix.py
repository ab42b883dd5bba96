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
    >>> fit_transform(preprocess, table, ["x", "c"], ["c"]).tolist()
    [[-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.sql.training import data


def fit_transform(preprocess: Any, table: pa.Table, features: list[str], text: list[str]) -> np.ndarray:
    """Fit `preprocess` on the rows; their processed matrix."""
    numeric = [name for name in features if name not in text]
    numbers = _numbers(table, numeric)
    if numbers is None or np.isnan(numbers).all(axis=0).any():
        # Infinities (scikit-learn refuses them) or a column without a value (the imputer
        # drops it): scikit-learn's own path, with its own outcome.
        return np.asarray(preprocess.fit_transform(data.feature_matrix(table, features, text)))
    categories = [_sorted_values(table.column(name)) for name in text]
    preprocess.fit(_few_rows(features, text, categories))
    scaling = preprocess.named_transformers_.get("numeric")
    block = scaling.fit_transform(numbers) if scaling is not None else None
    return _assemble(preprocess, table, text, block)


def transform(preprocess: Any, table: pa.Table, features: list[str], text: list[str]) -> np.ndarray:
    """The rows through a fitted `preprocess`, as `preprocess.transform(feature_matrix(...))`."""
    numeric = [name for name in features if name not in text]
    numbers = _numbers(table, numeric)
    if numbers is None:
        return np.asarray(preprocess.transform(data.feature_matrix(table, features, text)))
    scaling = preprocess.named_transformers_.get("numeric")
    block = scaling.transform(numbers) if scaling is not None else None
    return _assemble(preprocess, table, text, block)


def _numbers(table: pa.Table, names: list[str]) -> np.ndarray | None:
    """The numeric columns as one float64 matrix, NULL as NaN; None when one holds an infinity."""
    matrix = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        floats = pc.cast(table.column(name), pa.float64()).fill_null(math.nan)
        matrix[:, j] = floats.to_numpy(zero_copy_only=False)
    return None if np.isinf(matrix).any() else matrix


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


def _assemble(preprocess: Any, table: pa.Table, text: list[str], block: np.ndarray | None) -> np.ndarray:
    """The ColumnTransformer's output: the numeric block, then each string column encoded."""
    spans = preprocess.output_indices_
    matrix = np.zeros((table.num_rows, max(s.stop for s in spans.values())), dtype=np.float64)
    if block is not None:
        matrix[:, spans["numeric"]] = block
    if not text:
        return matrix
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
            start += 1
            continue
        seen = ~np.isnan(codes)  # one-hot: an unseen value encodes as all zeros
        matrix[rows[seen], start + codes[seen].astype(np.int64)] = 1.0
        start += len(values)
    return matrix
