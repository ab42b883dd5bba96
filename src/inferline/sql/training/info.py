"""ML.TRAINING_INFO, ML.FEATURE_INFO, ML.WEIGHTS and ML.CENTROIDS of a trained model, with
BigQuery's output columns, as Arrow tables.

What needs the training rows is worked out when the model is fitted (`describe`) and kept on
the Pipeline (`feature_info_`, `processed_mean_`, ...), so these read the stored model only.

Example:
    >>> [f.name for f in TRAINING_INFO]
    ['training_run', 'iteration', 'loss', 'eval_loss', 'learning_rate', 'duration_ms']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.sql.training import layout

# models/trained.py imports scikit-learn (~1.5 s CPU): the functions import it where they use it,
# so `inferline sql` runs that touch no trained model do not pay for it.

TRAINING_INFO = pa.schema(
    [
        ("training_run", pa.int64()),
        ("iteration", pa.int64()),
        ("loss", pa.float64()),
        ("eval_loss", pa.float64()),
        ("learning_rate", pa.float64()),
        ("duration_ms", pa.int64()),
    ]
)
FEATURE_INFO = pa.schema(
    [
        ("input", pa.string()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("mean", pa.float64()),
        ("median", pa.float64()),
        ("stddev", pa.float64()),
        ("category_count", pa.int64()),
        ("null_count", pa.int64()),
        ("dimension", pa.int64()),
    ]
)
CATEGORY_WEIGHTS = pa.list_(pa.struct([("category", pa.string()), ("weight", pa.float64())]))
WEIGHTS = pa.schema(
    [("processed_input", pa.string()), ("weight", pa.float64()), ("category_weights", CATEGORY_WEIGHTS)]
)
# A multiclass logistic_reg: one row per (class_label, processed_input), as BigQuery.
CLASS_WEIGHTS = pa.schema([*WEIGHTS, ("class_label", pa.string())])
# matrix_factorization: one row per user and per item, as BigQuery.
FACTOR_WEIGHTS = pa.schema(
    [
        ("processed_input", pa.string()),
        ("feature", pa.string()),
        ("factor_weights", pa.list_(pa.struct([("factor", pa.int64()), ("weight", pa.float64())]))),
        ("intercept", pa.float64()),
    ]
)
CATEGORICAL_VALUE = pa.list_(pa.struct([("category", pa.string()), ("value", pa.float64())]))
CENTROIDS = pa.schema(
    [
        ("centroid_id", pa.int64()),
        ("feature", pa.string()),
        ("numerical_value", pa.float64()),
        ("categorical_value", CATEGORICAL_VALUE),
    ]
)
INTERCEPT = "__INTERCEPT__"


def describe(
    pipeline: Any, table: pa.Table, processed_mean: np.ndarray, features: list[str], text: list[str]
) -> None:
    """Record on `pipeline` what the info functions need from the training rows `table`
    (`processed_mean`: the mean of each of their processed columns)."""
    rows = []
    for name in features:
        column = table.column(name)
        nulls = int(column.null_count)
        if name in text:
            count = int(pc.count_distinct(column.drop_null()).as_py())
            rows.append({"input": name, "category_count": count, "null_count": nulls})
            continue
        values = np.asarray(pc.cast(column.drop_null(), pa.float64()).to_numpy(zero_copy_only=False))
        stats: dict[str, float | None] = {
            "min": None,
            "max": None,
            "mean": None,
            "median": None,
            "stddev": None,
        }
        if len(values):
            stats = {
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "stddev": float(values.std(ddof=1)) if len(values) > 1 else None,
            }
        rows.append({"input": name, **stats, "null_count": nulls})
    pipeline.feature_info_ = rows
    pipeline.processed_mean_ = np.asarray(processed_mean, dtype=np.float64)


def _model(loaded: Any, where: str) -> Any:
    if getattr(loaded.model, "model_type_", None) is None:
        raise SqlError(f"{where}: model {loaded.model_id} was not trained by CREATE MODEL ... AS SELECT here")
    return loaded.model


def training_info(loaded: Any, where: str) -> pa.Table:
    rows = [{"training_run": 0, **row} for row in _model(loaded, where).training_info_]
    return pa.Table.from_pylist(rows, schema=TRAINING_INFO)


def feature_info(loaded: Any, where: str) -> pa.Table:
    return pa.Table.from_pylist(_model(loaded, where).feature_info_, schema=FEATURE_INFO)


def weights(loaded: Any, where: str, *, standardize: bool = False) -> pa.Table:
    """Linear models' weights: one row per input (numbers: `weight` on the input's own scale,
    or on the standardised one with STRUCT(TRUE AS standardize); strings: `category_weights`)
    and `__INTERCEPT__`; a multiclass logistic_reg repeats them per class, naming it in
    `class_label` (BigQuery's one row per <class_label, processed_input>)."""
    model = _model(loaded, where)
    if model.model_type_ == "matrix_factorization":
        return factor_weights(model)
    if model.model_type_ not in ("linear_reg", "logistic_reg"):
        raise SqlError(
            f"{where}: ML.WEIGHTS takes linear_reg and logistic_reg models, not {model.model_type_}"
        )
    estimator = model[-1]
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercepts = np.asarray(estimator.intercept_, dtype=np.float64).reshape(-1)
    if coef.ndim == 2 and coef.shape[0] > 1:
        rows = []
        for k, label in enumerate(estimator.classes_):
            part = _weight_rows(model, list(loaded.inputs), coef[k], float(intercepts[k]), standardize)
            rows += [{**row, "class_label": str(label)} for row in part]
        return pa.Table.from_pylist(rows, schema=CLASS_WEIGHTS)
    rows = _weight_rows(model, list(loaded.inputs), coef.reshape(-1), float(intercepts[0]), standardize)
    return pa.Table.from_pylist(rows, schema=WEIGHTS)


def factor_weights(model: Any) -> pa.Table:
    """A matrix_factorization model's users and items: processed_input (the user or item column),
    feature (the id), factor_weights ({factor, weight}, factors from 1) and intercept; the
    global mean rating is folded into the items' intercepts, so a rating is
    user . item factors + user intercept + item intercept."""
    rows = []
    sides = (
        (model.user_col_, model.users_, model.user_factors_, model.user_bias_, 0.0),
        (model.item_col_, model.items_, model.item_factors_, model.item_bias_, float(model.mean_)),
    )
    for column, ids, factors, bias, shift in sides:
        for key, vector, intercept in zip(ids, factors, bias, strict=True):
            weights = [{"factor": k, "weight": float(w)} for k, w in enumerate(vector, start=1)]
            rows.append(
                {"processed_input": column, "feature": str(key), "factor_weights": weights,
                 "intercept": float(intercept) + shift}
            )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=FACTOR_WEIGHTS)


def _weight_rows(
    model: Any, inputs: list[str], coef: np.ndarray, intercept: float, standardize: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    categories: dict[str, list[dict[str, Any]]] = {}
    for column in layout.columns(model, inputs):
        weight = float(coef[column.index])
        if column.category is not None:
            categories.setdefault(column.feature, []).append({"category": column.category, "weight": weight})
            continue
        if not standardize:
            intercept -= weight * column.mean / column.scale
            weight /= column.scale
        rows.append({"processed_input": column.feature, "weight": weight, "category_weights": []})
    rows += [{"processed_input": f, "weight": None, "category_weights": c} for f, c in categories.items()]
    rows.append({"processed_input": INTERCEPT, "weight": intercept, "category_weights": []})
    order = {name: k for k, name in enumerate([*inputs, INTERCEPT])}
    rows.sort(key=lambda r: order[r["processed_input"]])
    return rows


def centroids(loaded: Any, where: str, *, standardize: bool = False) -> pa.Table:
    """k-means centroids: one row per centroid and input; numbers on the input's own scale
    (standardised with STRUCT(TRUE AS standardize)), strings as {category, value} lists."""
    from inferline.models.trained import Centroids

    model = _model(loaded, where)
    final = model[-1]
    if not isinstance(final, Centroids):
        raise SqlError(f"{where}: ML.CENTROIDS takes kmeans models, not {model.model_type_}")
    processed = layout.columns(model, list(loaded.inputs))
    rows = []
    for k, center in enumerate(final.cluster_centers_, start=1):
        values: dict[str, list[dict[str, Any]]] = {}
        for column in processed:
            value = float(center[column.index])
            if column.category is None:
                number = value if standardize else column.original(value)
                rows.append({"centroid_id": k, "feature": column.feature, "numerical_value": number})
            else:
                values.setdefault(column.feature, []).append({"category": column.category, "value": value})
        rows += [{"centroid_id": k, "feature": f, "categorical_value": v} for f, v in values.items()]
    order = {name: k for k, name in enumerate(loaded.inputs)}
    rows.sort(key=lambda r: (r["centroid_id"], order[r["feature"]]))
    return pa.Table.from_pylist(rows, schema=CENTROIDS)
