"""Confusion-matrix metrics agree with scikit-learn's on the same labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from inferline.report.metrics import NULL_LABEL, Confusion, class_name, merge_counts, sort_classes


def test_metrics_match_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(7)
    truth = rng.choice(["cat", "dog", "owl", "eel"], size=500, p=[0.4, 0.3, 0.2, 0.1])
    predicted = np.where(rng.random(500) < 0.7, truth, rng.choice(["cat", "dog", "owl", "eel"], size=500))
    cm = Confusion.from_pairs(Counter(zip(truth.tolist(), predicted.tolist(), strict=True)))
    labels = ["cat", "dog", "eel", "owl"]
    assert cm.labels == labels
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(truth, predicted, labels=labels))
    assert cm.accuracy == pytest.approx(accuracy_score(truth, predicted))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels)
    scores = cm.per_class()
    assert [s.precision for s in scores] == pytest.approx(precision.tolist())
    assert [s.recall for s in scores] == pytest.approx(recall.tolist())
    assert [s.f1 for s in scores] == pytest.approx(f1.tolist())
    assert [s.support for s in scores] == support.tolist()
    macro = precision_recall_fscore_support(truth, predicted, labels=labels, average="macro")
    assert cm.macro() == pytest.approx(macro[:3])


def test_a_class_never_predicted_has_zero_precision_not_nan() -> None:
    cm = Confusion.from_pairs({("a", "a"): 2, ("b", "a"): 1})
    a, b = cm.per_class()
    assert (b.precision, b.recall, b.f1, b.predicted) == (0.0, 0.0, 0.0, 0)
    assert a.precision == pytest.approx(2 / 3) and a.recall == 1.0
    assert Confusion.from_pairs({}).accuracy == 0.0


def test_integral_floats_match_ints_and_nulls_get_a_name() -> None:
    assert class_name(1.0) == "1" and class_name(1) == "1" and class_name(1.5) == "1.5"
    assert class_name(None) == NULL_LABEL and class_name(True) == "true"
    cm = Confusion.from_pairs({(1, 1.0): 3, (2.0, 1): 1})
    assert cm.labels == ["1", "2"] and cm.correct == 3
    assert merge_counts([(1, 2), (1.0, 3), (None, 1)]) == {"1": 5, NULL_LABEL: 1}


def test_classes_sort_numbers_numerically_then_text_then_null() -> None:
    assert sort_classes(["10", "9", "b", NULL_LABEL, "a", "-1"]) == ["-1", "9", "10", "a", "b", NULL_LABEL]
