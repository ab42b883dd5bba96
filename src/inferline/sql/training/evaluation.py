"""ML.EVALUATE's row for a trained model, worked out when it is trained (as BigQuery stores the
evaluation with the model): on the rows the data split held out, or the training rows when
nothing is held out. ML.EVALUATE(MODEL m) without input reads the stored row (sql/bigquery.py),
so the evaluation rows are neither copied into the database nor preprocessed again.

The metrics are sql/evaluate.py's, on the model's predictions of the already preprocessed
rows; the {(truth, predicted): rows} counts and each row's class are found in Arrow, so a
million rows cost a few vectorised passes.

Example:
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> fitted = Predictions(LinearRegression().fit(x, [1.0, 3.0, 5.0]))
    >>> metrics(fitted, x, np.array([1.0, 3.0, 5.0]), classifier=False)["r2_score"]
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.sql import evaluate


class Predictions:
    """A fitted estimator's predictions, each matrix's worked out once: ML.TRAINING_INFO's loss
    and ML.EVALUATE's metrics read the same rows when nothing is held out.

    Example:
        >>> import numpy as np
        >>> from sklearn.linear_model import LinearRegression
        >>> x = np.array([[0.0], [1.0]])
        >>> predictions = Predictions(LinearRegression().fit(x, [1.0, 3.0]))
        >>> predictions.values(x) is predictions.values(x)
        True
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._seen: list[tuple[np.ndarray, str, np.ndarray]] = []

    def values(self, x: np.ndarray) -> np.ndarray:
        """`predict` (regressors)."""
        return self._once(x, "values", lambda: np.asarray(self.model.predict(x)))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """`predict_proba` (classifiers), float64."""
        return self._once(
            x, "probabilities", lambda: np.asarray(self.model.predict_proba(x), dtype=np.float64)
        )

    def _once(self, x: np.ndarray, kind: str, work: Callable[[], np.ndarray]) -> np.ndarray:
        for rows, seen, result in self._seen:
            if rows is x and seen == kind:
                return result
        result = work()
        self._seen.append((x, kind, result))
        return result


def metrics(predictions: Predictions, x: np.ndarray, y: Any, *, classifier: bool) -> dict[str, float | None]:
    """ML.EVALUATE's metrics of the fitted estimator on the preprocessed rows `x` (their labels
    `y` in numpy or Arrow)."""
    if not classifier:
        values = np.asarray(predictions.values(x), dtype=np.float64)
        return evaluate.regression_metrics(np.asarray(y, dtype=np.float64), values)
    model = predictions.model
    classes = list(model.classes_)
    probabilities = predictions.probabilities(x)
    scores = probabilities if evaluate.are_probabilities(probabilities) else None
    # The most probable class: what `predict` gives for these estimators (LogisticRegression,
    # SGD's log loss, the MLP and XGBoost's argmax), without scoring the rows twice.
    predicted = np.argmax(probabilities, axis=1)
    values = np.asarray(model.classes_).tolist()
    truths = y if isinstance(y, pa.Array | pa.ChunkedArray) else pa.array(y, from_pandas=True)
    found = pc.index_in(truths, value_set=pa.array(values))
    if found.null_count:  # held-out labels the model has no class for: counted one by one
        named = [values[k] for k in predicted.tolist()]
        return evaluate.classification_metrics(truths.to_pylist(), named, scores, classes)
    truth = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)
    width = len(values)
    table = np.bincount(truth * width + predicted, minlength=width * width).reshape(width, width)
    counts = {(values[t], values[p]): int(table[t, p]) for t, p in zip(*np.nonzero(table), strict=True)}
    return evaluate.counted_metrics(counts, truth, scores, classes)
