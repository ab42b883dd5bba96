"""Turning a deep-learning model's output tensor into `prediction` and `scores`.

Shared by the torch and Keras handlers. A model is a classifier only when it says so: its
last layer is a softmax (the handler tells, `classifier=True`) or the spec says `output:
classes`. Then an (n, k>1) output gives prediction = argmax, scores = the probabilities
(the output itself when rows already sum to 1, else its softmax); a classifier with several
outputs classifies its first (TF: its probability map) and gives each other one a column.
Otherwise the output comes back as the model gives it: (n,)/(n, 1) one value per row,
(n, k) a list per row (an embedding, a regression with several outputs, plain logits).
`output: raw` keeps even a classifier's tensor.

Example:
    >>> import numpy as np
    >>> logits = np.array([[0.1, 2.0], [3.0, 0.0]])
    >>> classify(logits, output=None, scores=True, classifier=True).prediction.tolist()
    [1, 0]
    >>> classify(logits, output=None, scores=True).prediction.shape
    (2, 2)
"""

from __future__ import annotations

import numpy as np

from inferline.errors import ModelError, SpecError
from inferline.models.base import Prediction

OUTPUT_MODES = ("raw", "argmax", "classes")


def check_output_mode(output: str | None, *, where: str) -> None:
    if output is not None and output not in OUTPUT_MODES:
        raise SpecError(f"{where}: output: {output!r} is not supported; expected raw, classes or argmax")


def declared_output_mode(names: list[str], types: list[str]) -> str | None:
    """The output mode a declared output schema asks for (SQL's `CREATE MODEL ... OUTPUT(...)`).

    One ARRAY output (`OUTPUT(feature_vector ARRAY<FLOAT64>)`) is the model's whole output
    tensor: `raw`, never an argmax. A value then an ARRAY (`OUTPUT(label INT64, probabilities
    ARRAY<FLOAT64>)`) declares a classifier: `classes`. Anything else leaves the model's own rule.

    Example:
        >>> declared_output_mode(["feature_vector"], ["ARRAY<FLOAT64>"])
        'raw'
        >>> declared_output_mode(["label", "probs"], ["INT64", "ARRAY<FLOAT64>"])
        'classes'
    """
    arrays = [t.upper().startswith("ARRAY") for t in types]
    if len(names) == 1 and arrays == [True]:
        return "raw"
    if len(names) == 2 and arrays == [False, True]:
        return "classes"
    return None


def classify(values: np.ndarray, *, output: str | None, scores: bool, classifier: bool = False) -> Prediction:
    """prediction/scores for a batch of model outputs (first axis = rows)."""
    if output == "raw":
        return Prediction(prediction=values)
    if (classifier or output in ("classes", "argmax")) and values.ndim == 2 and values.shape[1] > 1:
        labels = row_argmax(values)
        return Prediction(prediction=labels, scores=probabilities(values) if scores else None)
    if values.ndim == 2 and values.shape[1] == 1:
        return Prediction(prediction=values[:, 0])
    return Prediction(prediction=values)


def probabilities(values: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, unless each row already is a probability distribution."""
    values = np.asarray(values, dtype=np.float64)
    if _distributions(values):
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
    index = row_argmax(p)
    labels = np.asarray(classes)[index] if classes is not None else index
    return Prediction(prediction=labels, scores=p if scores else None)


def from_named_outputs(
    outputs: dict[str, np.ndarray],
    *,
    output: str | None,
    scores: bool,
    selected: list[str] | None = None,
    where: str = "model",
) -> Prediction:
    """A model's named output tensors (TensorFlow signatures, TFLite) -> prediction and scores.

    The model is a classifier when it says so: `output: classes`, or an output that is a
    probability map (named `*prob*`/`*softmax*`, or the only 2-D output with rows that are
    distributions). Then prediction = the most likely class, scores = the probabilities, and
    any other output comes back under its name (`with_other_outputs`). Otherwise the outputs
    come back as they are (`as_outputs`: several give a column each). `selected` (the spec's
    `outputs:`) keeps only the outputs it names, in its order.

    Example:
        >>> from_named_outputs({"probabilities": np.array([[0.2, 0.8]])}, output=None, scores=True).prediction
        array([1])
    """
    if selected:
        outputs = select_outputs(outputs, selected, where=where)
    names = list(outputs)
    if output != "raw":
        wide = [n for n in names if outputs[n].ndim == 2 and outputs[n].shape[1] > 1]
        named = [n for n in wide if "prob" in n.lower() or "softmax" in n.lower()]
        chosen = named[0] if named else wide[0] if len(wide) == 1 else None
        if chosen is not None and (
            output in ("classes", "argmax") or named or _distributions(outputs[chosen])
        ):
            classified = from_probabilities(probabilities(outputs[chosen]), None, scores=scores)
            return with_other_outputs(classified, {n: v for n, v in outputs.items() if n != chosen})
    return as_outputs(outputs)


def select_outputs(
    outputs: dict[str, np.ndarray], selected: list[str], *, where: str
) -> dict[str, np.ndarray]:
    """The outputs `selected` names (the spec's `outputs:`), in its order.

    Example:
        >>> list(select_outputs({"a": np.zeros(1), "b": np.ones(1)}, ["b"], where="model m"))
        ['b']
    """
    unknown = [name for name in selected if name not in outputs]
    if unknown:
        raise ModelError(
            f"{where}: outputs: names {', '.join(unknown)}, which the model does not give "
            f"(its outputs: {', '.join(outputs)})"
        )
    return {name: outputs[name] for name in selected}


def with_other_outputs(classified: Prediction, others: dict[str, np.ndarray]) -> Prediction:
    """A classifier's answer plus its model's other outputs: `prediction` and `scores` (the
    classified output) then a column per other output under its name (`output_<name>` when the
    name is taken). With no other output, the classifier's answer as it is.

    Example:
        >>> labels = Prediction(np.array([1]), scores=np.array([[0.2, 0.8]]))
        >>> list(with_other_outputs(labels, {"embedding": np.zeros((1, 3))}).outputs)
        ['prediction', 'scores', 'embedding']
    """
    if not others:
        return classified
    named: dict[str, np.ndarray] = {"prediction": classified.prediction}
    if classified.scores is not None:
        named["scores"] = classified.scores
    for name, values in others.items():
        named[f"output_{name}" if name in ("prediction", "scores") else name] = _column(np.asarray(values))
    return Prediction(prediction=classified.prediction, scores=classified.scores, outputs=named)


def as_outputs(outputs: dict[str, np.ndarray]) -> Prediction:
    """A model's outputs as it gives them: one output is `prediction`; several are each kept
    under its name (a column each), `prediction` being the first. An (n, 1) output is one
    value per row.

    Example:
        >>> answer = as_outputs({"value": np.array([[1.0], [2.0]]), "embedding": np.zeros((2, 3))})
        >>> list(answer.outputs), answer.outputs["value"].tolist()
        (['value', 'embedding'], [1.0, 2.0])
    """
    shaped = {name: _column(np.asarray(values)) for name, values in outputs.items()}
    first = next(iter(shaped.values()))
    return Prediction(prediction=first, outputs=shaped if len(shaped) > 1 else None)


def _column(values: np.ndarray) -> np.ndarray:
    return values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values


def _distributions(values: np.ndarray) -> bool:
    """Whether each row sums to 1 (within 1e-4) over values >= 0 (NaN: no)."""
    values = np.asarray(values)
    if not values.size:
        return False
    # Not np.allclose's temporaries, nor sum(axis=1): along rows of a few values numpy's
    # reduction costs ~20x a matrix-vector product (0.7 vs 0.03 ms per 16,384 rows).
    if values.ndim == 2:
        with np.errstate(invalid="ignore"):  # inf - inf in a row: NaN, not a distribution
            sums = values.astype(np.float64, copy=False) @ np.ones(values.shape[1])
    else:
        sums = values.sum(axis=1, dtype=np.float64)
    return bool(values.min() >= 0 and np.abs(sums - 1.0).max() <= 1.1e-4)


def row_argmax(values: np.ndarray) -> np.ndarray:
    """`values.argmax(axis=1)`: the first largest value's column in each row. A few float
    columns are compared column by column, twice as fast as numpy's argmax along rows this
    short; rows holding NaN are left to numpy (which picks the first NaN).

    Example:
        >>> row_argmax(np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]])).tolist()
        [1, 0]
    """
    width = values.shape[1] if values.ndim == 2 else 0
    if not 1 < width <= 8 or not np.issubdtype(values.dtype, np.floating):
        return np.asarray(values.argmax(axis=1))
    index = np.zeros(len(values), dtype=np.intp)
    best = values[:, 0]
    for j in range(1, width):
        column = values[:, j]
        index = np.where(column > best, j, index)  # strictly larger: a tie keeps the first
        best = np.maximum(best, column)
    with np.errstate(invalid="ignore"):
        nan = np.flatnonzero(np.isnan(values @ np.ones(width, dtype=values.dtype)))
    if len(nan):
        index[nan] = values[nan].argmax(axis=1)
    return index


def several(
    values: list[np.ndarray],
    names: list[str] | None,
    *,
    where: str,
    classified: Prediction | None = None,
) -> Prediction:
    """A torch tuple / Keras list of outputs, each under its name: `names` (the spec's
    `outputs:`, or the model's own), else output_0, output_1, ... A classifier's first output
    is `classified` (its labels and scores), the others come after it under their names.

    Example:
        >>> list(several([np.zeros(2), np.ones((2, 3))], None, where="model m").outputs)
        ['output_0', 'output_1']
    """
    if names is not None and len(names) != len(values):
        raise ModelError(
            f"{where}: outputs: names {len(names)} outputs ({', '.join(names)}) but the model "
            f"returns {len(values)}; name each of them"
        )
    keys = names if names is not None else [f"output_{i}" for i in range(len(values))]
    if classified is not None:
        return with_other_outputs(classified, dict(zip(keys[1:], values[1:], strict=True)))
    return as_outputs(dict(zip(keys, values, strict=True)))
