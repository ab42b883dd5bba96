"""Turning a deep-learning model's output tensor into `prediction` and `scores`.

Shared by the torch and Keras handlers. An (n, k>1) output is a classifier's: prediction
= argmax, scores = softmax (or the output itself when it already holds probabilities,
as a Keras model ending in softmax does). An (n,) or (n, 1) output is a regression's.
`output: raw` keeps the whole tensor as the prediction (a list column).

Example:
    >>> import numpy as np
    >>> classify(np.array([[0.1, 2.0], [3.0, 0.0]]), output=None, scores=True).prediction.tolist()
    [1, 0]
"""

from __future__ import annotations

import numpy as np

from inferline.errors import SpecError
from inferline.models.base import Prediction

OUTPUT_MODES = ("raw", "argmax")


def check_output_mode(output: str | None, *, where: str) -> None:
    if output is not None and output not in OUTPUT_MODES:
        raise SpecError(f"{where}: output: {output!r} is not supported; expected raw or argmax (the default)")


def classify(values: np.ndarray, *, output: str | None, scores: bool) -> Prediction:
    """prediction/scores for a batch of model outputs (first axis = rows)."""
    if output == "raw":
        return Prediction(prediction=values)
    if values.ndim == 2 and values.shape[1] > 1:
        labels = values.argmax(axis=1)
        return Prediction(prediction=labels, scores=probabilities(values) if scores else None)
    if values.ndim == 2 and values.shape[1] == 1:
        return Prediction(prediction=values[:, 0])
    return Prediction(prediction=values)


def probabilities(values: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, unless each row already is a probability distribution."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and values.min() >= 0 and np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        return values
    shifted = values - values.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def from_probabilities(probabilities: np.ndarray, classes: np.ndarray | None, *, scores: bool) -> Prediction:
    """A classifier's probabilities -> its labels and scores.

    One column (a binary model's probability of the second class) becomes two; the label is
    the class with the highest probability (the first on a tie, as scikit-learn's `p > 0.5`).

    Example:
        >>> answer = from_probabilities(np.array([0.2, 0.9]), np.array(["no", "yes"]), scores=False)
        >>> answer.prediction.tolist()
        ['no', 'yes']
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    index = p.argmax(axis=1)
    labels = np.asarray(classes)[index] if classes is not None else index
    return Prediction(prediction=labels, scores=p if scores else None)
