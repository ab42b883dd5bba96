"""Where each input column of a trained Pipeline ends up after BigQuery's automatic
preprocessing (sql/training/data.py's ColumnTransformer): the processed columns of each feature,
with the category each one-hot column stands for, and the numbers' mean and scale.

Example:
    >>> Column("x", None, 0, 1.0, 2.0).original(1.0)
    3.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Column:
    """One processed column: its feature, category (one-hot columns), position, and for numbers
    the training mean and the standardising scale (1 when not standardised)."""

    feature: str
    category: str | None
    index: int
    mean: float = 0.0
    scale: float = 1.0

    def original(self, value: float) -> float:
        """A standardised value back on the feature's scale."""
        return value * self.scale + self.mean


def columns(pipeline: Any, features: list[str]) -> list[Column]:
    """The processed columns, in the order the estimator sees them."""
    transformer = pipeline[0]
    result: list[Column] = []
    position = 0
    for name, step, indices in transformer.transformers_:
        if name == "numeric":
            means = np.asarray(step.named_steps["impute"].statistics_, dtype=np.float64)
            scaler = step.named_steps.get("standardize")
            scales = (
                np.asarray(scaler.scale_, dtype=np.float64) if scaler is not None else np.ones(len(indices))
            )
            for k, i in enumerate(indices):
                result.append(Column(features[i], None, position, float(means[k]), float(scales[k])))
                position += 1
        elif name == "categorical":
            encoder = step.named_steps["encode"]
            one_hot = type(encoder).__name__ == "OneHotEncoder"
            for k, i in enumerate(indices):
                if one_hot:
                    for category in encoder.categories_[k]:
                        result.append(Column(features[i], str(category), position))
                        position += 1
                else:
                    result.append(Column(features[i], None, position))
                    position += 1
    return result


def by_feature(layout: list[Column], features: list[str]) -> np.ndarray:
    """A (processed columns, features) 0/1 matrix summing processed columns into features."""
    matrix = np.zeros((len(layout), len(features)))
    where = {name: j for j, name in enumerate(features)}
    for column in layout:
        matrix[column.index, where[column.feature]] = 1.0
    return matrix
