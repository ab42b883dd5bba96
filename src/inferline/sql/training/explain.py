"""ML.EXPLAIN_PREDICT, ML.GLOBAL_EXPLAIN and ML.DETECT_ANOMALIES of a trained model.

Attributions are exact for linear models: w * (x - mean of the training rows), in the processed
space, summed over a feature's one-hot columns, so baseline + sum = the prediction (the log-odds
for logistic_reg, of the predicted class). Tree models use XGBoost's pred_contribs (SHAP
values, in the margin). ML.GLOBAL_EXPLAIN is the mean absolute attribution of each feature over
the training rows (at most 10,000 of them, worked out at training when the model is created
with enable_global_explain=TRUE, as BigQuery asks).

k-means anomalies: a row's normalized_distance is its distance to the nearest centroid divided
by the root mean square distance of that centroid's training rows; it is an anomaly when above
the (1 - contamination) quantile of the training rows' normalized distances.

Example:
    >>> ATTRIBUTIONS.value_type.names
    ['feature', 'attribution']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from inferline.errors import SqlError
from inferline.sql.training import layout

# models/trained.py imports scikit-learn (~1.5 s CPU): the functions import it where they use it,
# so `inferline sql` runs that touch no trained model do not pay for it.

ATTRIBUTIONS = pa.list_(pa.struct([("feature", pa.string()), ("attribution", pa.float64())]))
GLOBAL_EXPLAIN = pa.schema([("feature", pa.string()), ("attribution", pa.float64())])
GLOBAL_ROWS = 10_000
QUANTILES = np.linspace(0.0, 1.0, 1001)


def attributions(
    model: Any, features: list[str], matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(attributions (n, features), baseline (n,), prediction value (n,)) for raw input rows."""
    from inferline.models.trained import BoostedTrees

    processed = np.asarray(model[:-1].transform(matrix), dtype=np.float64)
    final = model[-1]
    if isinstance(final, BoostedTrees):
        contributions = final.contributions(processed)
        if contributions.ndim == 3:  # several classes: the predicted one's
            chosen = np.argmax(contributions.sum(axis=2), axis=1)
            contributions = contributions[np.arange(len(contributions)), chosen]
        baseline = contributions[:, -1]
        parts = contributions[:, :-1]
        return parts, baseline, baseline + parts.sum(axis=1)
    coef = getattr(final, "coef_", None)
    if coef is None:
        raise SqlError(f"feature attributions need a linear, logistic or tree model, not {model.model_type_}")
    weights = np.asarray(coef, dtype=np.float64)
    intercepts = np.asarray(final.intercept_, dtype=np.float64).reshape(-1)
    mean = np.asarray(model.processed_mean_, dtype=np.float64)
    if weights.ndim == 2 and weights.shape[0] > 1:  # multiclass: the predicted class's log-odds
        chosen = np.argmax(processed @ weights.T + intercepts, axis=1)
        w, b = weights[chosen], intercepts[chosen]
    else:
        w, b = np.broadcast_to(weights.reshape(-1), processed.shape), np.full(len(processed), intercepts[0])
    parts = (w * (processed - mean)) @ layout.by_feature(layout.columns(model, features), features)
    baseline = b + (w * mean).sum(axis=1)
    return parts, baseline, baseline + parts.sum(axis=1)


def describe(model: Any, features: list[str], matrix: Any, *, global_explain: bool) -> None:
    """Record ML.DETECT_ANOMALIES' facts about the training rows, and ML.GLOBAL_EXPLAIN's when
    asked (`global_explain`)."""
    from inferline.models.trained import BoostedTrees, Centroids

    final = model[-1]
    chosen = np.random.default_rng(0).permutation(len(matrix))[:GLOBAL_ROWS]
    sample = matrix.iloc[chosen] if hasattr(matrix, "iloc") else matrix[chosen]  # a DataFrame in training
    if isinstance(final, Centroids):
        processed = model[:-1].transform(matrix)
        distances = final.transform(processed)
        nearest = np.argmin(distances, axis=1)
        shortest = distances[np.arange(len(distances)), nearest]
        scale = np.ones(final.n_clusters)
        for k in range(final.n_clusters):
            mine = shortest[nearest == k]
            rms = float(np.sqrt(np.mean(mine**2))) if len(mine) else 0.0
            scale[k] = rms if rms > 0 else 1.0
        model.cluster_scale_ = scale
        model.distance_quantiles_ = np.quantile(shortest / scale[nearest], QUANTILES)
    elif global_explain and (isinstance(final, BoostedTrees) or hasattr(final, "coef_")):
        parts, _, _ = attributions(model, features, sample)
        model.global_explain_ = [
            {"feature": f, "attribution": float(a)}
            for f, a in zip(features, np.abs(parts).mean(axis=0), strict=True)
        ]


def global_explain(model: Any, where: str) -> pa.Table:
    rows = getattr(model, "global_explain_", None)
    if rows is None:
        raise SqlError(
            f"{where}: ML.GLOBAL_EXPLAIN needs a linear, logistic or tree model trained here with "
            "OPTIONS(enable_global_explain=TRUE)"
        )
    return pa.Table.from_pylist(sorted(rows, key=lambda r: -r["attribution"]), schema=GLOBAL_EXPLAIN)


def top_attributions(features: list[str], parts: np.ndarray, top_k: int) -> pa.Array:
    """Each row's top_k attributions by absolute value, as BigQuery's list of structs."""
    order = np.argsort(-np.abs(parts), axis=1, kind="stable")[:, :top_k]
    names = np.asarray(features, dtype=object)[order]
    values = np.take_along_axis(parts, order, axis=1)
    pairs = pa.StructArray.from_arrays(
        [pa.array(names.reshape(-1), pa.string()), pa.array(values.reshape(-1), pa.float64())],
        fields=list(ATTRIBUTIONS.value_type),
    )
    width = order.shape[1]
    offsets = pa.array(np.arange(0, (len(parts) + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pairs)


def anomalies(
    model: Any, matrix: np.ndarray, contamination: float, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(is_anomaly, normalized_distance) of k-means input rows."""
    from inferline.models.trained import Centroids

    final = model[-1]
    if not isinstance(final, Centroids):
        raise SqlError(f"{where}: ML.DETECT_ANOMALIES takes kmeans models here, not {model.model_type_}")
    distances = final.transform(model[:-1].transform(matrix))
    nearest = np.argmin(distances, axis=1)
    normalized = distances[np.arange(len(distances)), nearest] / model.cluster_scale_[nearest]
    threshold = float(np.interp(1.0 - contamination, QUANTILES, model.distance_quantiles_))
    return normalized > threshold, normalized
