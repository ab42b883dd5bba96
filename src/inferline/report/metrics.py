"""Classification metrics from counts: accuracy, per-class precision/recall, agreement.

Everything derives from a confusion matrix of counts, which DuckDB computes with one
GROUP BY, so a report over millions of rows moves only a few numbers into Python.

Example:
    >>> cm = Confusion.from_pairs({("a", "a"): 3, ("a", "b"): 1, ("b", "b"): 2})
    >>> round(cm.accuracy, 4)
    0.8333
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

NULL_LABEL = "(null)"


def class_name(value: object) -> str:
    """A class value as text: integral floats lose their `.0` so `1.0` matches `1`."""
    if value is None:
        return NULL_LABEL
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def sort_classes(names: Iterable[str]) -> list[str]:
    """Classes in natural order: numbers numerically, then text, `(null)` last."""

    def key(name: str) -> tuple[int, float, str]:
        if name == NULL_LABEL:
            return (2, 0.0, name)
        if re.fullmatch(r"-?\d+(\.\d+)?", name):
            return (0, float(name), name)
        return (1, 0.0, name)

    return sorted(set(names), key=key)


def merge_counts(pairs: Iterable[tuple[object, int]]) -> dict[str, int]:
    """Counts keyed by raw values -> counts keyed by `class_name`, merged."""
    merged: dict[str, int] = {}
    for value, count in pairs:
        name = class_name(value)
        merged[name] = merged.get(name, 0) + int(count)
    return merged


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, with its support (rows whose truth it is)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix: `matrix[i, j]` rows whose truth is `rows[i]` and prediction `cols[j]`.

    Rows and columns share one label list, so the diagonal is agreement.
    """

    labels: list[str]
    matrix: np.ndarray

    @classmethod
    def from_pairs(cls, counts: Mapping[tuple[object, object], int]) -> Confusion:
        """Build from `{(truth, prediction): count}`; values are normalised by `class_name`."""
        merged: dict[tuple[str, str], int] = {}
        for (truth, predicted), count in counts.items():
            key = (class_name(truth), class_name(predicted))
            merged[key] = merged.get(key, 0) + int(count)
        labels = sort_classes([t for t, _ in merged] + [p for _, p in merged])
        index = {name: i for i, name in enumerate(labels)}
        matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for (truth, predicted), count in merged.items():
            matrix[index[truth], index[predicted]] += count
        return cls(labels, matrix)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.matrix))

    @property
    def accuracy(self) -> float:
        """Share of rows on the diagonal (for two models: their agreement rate)."""
        return self.correct / self.total if self.total else 0.0

    def per_class(self) -> list[ClassScores]:
        """Precision/recall/F1 per class; 0.0 where a class was never predicted or never true."""
        diagonal = np.diag(self.matrix)
        support = self.matrix.sum(axis=1)
        predicted = self.matrix.sum(axis=0)
        scores = []
        for i, name in enumerate(self.labels):
            precision = diagonal[i] / predicted[i] if predicted[i] else 0.0
            recall = diagonal[i] / support[i] if support[i] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            scores.append(
                ClassScores(
                    name, float(precision), float(recall), float(f1), int(support[i]), int(predicted[i])
                )
            )
        return scores

    def macro(self) -> tuple[float, float, float]:
        """Unweighted mean precision, recall and F1 over classes that occur as truth."""
        rows = [s for s in self.per_class() if s.support]
        if not rows:
            return (0.0, 0.0, 0.0)
        return (
            float(np.mean([s.precision for s in rows])),
            float(np.mean([s.recall for s in rows])),
            float(np.mean([s.f1 for s in rows])),
        )
