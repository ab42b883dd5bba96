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
    >>> metrics(LinearRegression().fit(x, [1.0, 3.0, 5.0]), x, np.array([1.0, 3.0, 5.0]), classifier=False)[
    ...     "r2_score"]
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.sql import evaluate


def metrics(model: Any, x: np.ndarray, y: np.ndarray, *, classifier: bool) -> dict[str, float | None]:
    """ML.EVALUATE's metrics of the fitted estimator `model` on the preprocessed rows `x`."""
    if not classifier:
        return evaluate.regression_metrics(
            np.asarray(y, dtype=np.float64), np.asarray(model.predict(x), dtype=np.float64)
        )
    classes = list(model.classes_)
    scores: np.ndarray | None = np.asarray(model.predict_proba(x), dtype=np.float64)
    predicted = np.asarray(model.predict(x))
    truth = pa.array(y, from_pandas=True)
    pairs = pa.table({"truth": truth, "predicted": pa.array(predicted, from_pandas=True)})
    grouped = pairs.group_by(["truth", "predicted"]).aggregate([([], "count_all")])
    counts = {
        (t, p): int(n)
        for t, p, n in zip(
            grouped.column("truth").to_pylist(),
            grouped.column("predicted").to_pylist(),
            grouped.column("count_all").to_pylist(),
            strict=True,
        )
    }
    found = pc.index_in(truth, value_set=pa.array(np.asarray(model.classes_), from_pandas=True))
    columns = None if found.null_count else np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)
    if scores is not None and not evaluate.are_probabilities(scores):
        scores = None
    return evaluate.counted_metrics(counts, columns, scores, classes)
