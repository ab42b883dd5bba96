"""Model output tensors -> prediction and scores."""

from __future__ import annotations

import numpy as np
import pytest

from inferline.errors import SpecError
from inferline.models.outputs import (
    _distributions,
    check_output_mode,
    classify,
    declared_output_mode,
    from_named_outputs,
    probabilities,
    row_argmax,
)


def test_a_classifiers_logits_give_argmax_and_softmax() -> None:
    logits = np.array([[1.0, 3.0, 0.0], [2.0, -1.0, 0.5]], dtype=np.float32)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # The model says it is a classifier (a softmax last layer), or the spec does (output: classes).
    for got in (
        classify(logits, output=None, scores=True, classifier=True),
        classify(logits, output="classes", scores=True),
    ):
        assert got.prediction.tolist() == [1, 0]
        assert got.scores is not None
        np.testing.assert_allclose(got.scores, expected, rtol=1e-6)


def test_outputs_of_a_model_that_does_not_say_it_classifies_come_back_raw() -> None:
    embedding = np.array([[0.5, -1.0, 2.0], [0.0, 0.25, 0.75]])
    got = classify(embedding, output=None, scores=True)
    assert got.scores is None
    np.testing.assert_array_equal(got.prediction, embedding)  # no softmax, no argmax


def test_the_output_clause_declares_raw_or_classes() -> None:
    assert declared_output_mode(["feature_vector"], ["ARRAY<FLOAT64>"]) == "raw"
    assert declared_output_mode(["label", "probabilities"], ["INT64", "ARRAY<FLOAT64>"]) == "classes"
    assert declared_output_mode(["a", "b"], ["FLOAT64", "FLOAT64"]) is None


def test_probabilities_are_kept_as_they_are() -> None:
    probs = np.array([[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_array_equal(probabilities(probs), probs)


def test_regression_and_raw_outputs() -> None:
    column = np.array([[1.5], [2.5]])
    assert classify(column, output=None, scores=True).prediction.tolist() == [1.5, 2.5]
    raw = classify(np.ones((2, 3)), output="raw", scores=True)
    assert raw.prediction.shape == (2, 3) and raw.scores is None
    assert classify(np.ones((2, 3)), output=None, scores=False).scores is None


def test_unknown_output_mode() -> None:
    with pytest.raises(
        SpecError, match="model m: output: 'softmax' is not supported; expected raw, classes or argmax"
    ):
        check_output_mode("softmax", where="model m")


def test_row_argmax_is_numpys_argmax_with_ties_nans_and_infinities() -> None:
    rng = np.random.default_rng(0)
    for width in (1, 2, 3, 5, 8, 9):
        for dtype in (np.float32, np.float64, np.int64):
            values = rng.integers(0, 3, size=(400, width)).astype(dtype)  # many ties
            if dtype is not np.int64:
                values[rng.random(values.shape) < 0.05] = np.nan
                values[rng.random(values.shape) < 0.03] = np.inf
                values[rng.random(values.shape) < 0.03] = -np.inf
            assert row_argmax(values).tolist() == values.argmax(axis=1).tolist(), (width, dtype)


def test_rows_with_infinities_or_nans_are_no_probability_distributions() -> None:
    # (pytest turns numpy's "invalid value" warnings into errors: none may escape.)
    assert not _distributions(np.array([[0.5, np.inf, -np.inf], [0.2, 0.3, 0.5]]))
    assert from_named_outputs({"y": np.array([[np.nan, 1.0]])}, output=None, scores=True).scores is None
    assert _distributions(np.array([[0.2, 0.8], [1.0, 0.0]], dtype=np.float32))
