"""matrix_factorization (explicit feedback): BigQuery's recommender, fitted by alternating least
squares in numpy (models/trained.py's Factorization).

Options: user_col, item_col, rating_col (defaults 'user', 'item', 'rating'), num_factors
(default 10 here), l2_reg (default 1.0), max_iterations (ALS sweeps, default 20);
feedback_type='EXPLICIT' only. The stored model is the Factorization itself (no preprocessing:
users and items are ids); ML.RECOMMEND reads its factors (sql/recommend.py).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.sql import evaluate
from inferline.sql.training import data
from inferline.sql.training.options import TrainOptions

DEFAULT_FACTORS = 10
DEFAULT_L2 = 1.0
DEFAULT_SWEEPS = 20


def columns(options: TrainOptions) -> tuple[str, str, str]:
    """(user column, item column, rating column)."""
    return (
        str(options.get("user_col", "user")),
        str(options.get("item_col", "item")),
        str(options.label or "rating"),
    )


def fit(
    table: pa.Table, options: TrainOptions, where: str
) -> tuple[Any, list[str], dict[str, Any], pa.Table]:
    """(the fitted model, its inputs [user, item], the summary, the evaluation rows)."""
    user, item, rating = columns(options)
    missing = [c for c in (user, item, rating) if c not in table.column_names]
    if missing:
        raise SqlError(
            f"{where}: the query has no column(s) {', '.join(missing)} "
            f"(columns: {', '.join(table.column_names)}); "
            "name them with OPTIONS(user_col=..., item_col=..., rating_col=...)"
        )
    if not pa.types.is_integer(table.schema.field(rating).type) and not pa.types.is_floating(
        table.schema.field(rating).type
    ):
        raise SqlError(
            f"{where}: rating_col {rating!r} must be numbers, got {table.schema.field(rating).type}"
        )
    # ML.FEATURE_INFO: users and items are categories (counted on the query's rows)
    feature_info = [
        {
            "input": name,
            "category_count": int(pc.count_distinct(table.column(name).drop_null()).as_py()),
            "null_count": int(table.column(name).null_count),
        }
        for name in (user, item)
    ]
    for name in (user, item, rating):
        table = table.filter(pc.is_valid(table.column(name)))
    if table.num_rows == 0:
        raise SqlError(f"{where}: the query gives no rows with a user, an item and a rating")
    evaluation = data.split_rows(table, options, where)
    train = table.filter(pa.array(~evaluation)) if evaluation.any() else table
    held = table.filter(pa.array(evaluation)) if evaluation.any() else train
    # models/trained.py imports scikit-learn (~1.5 s CPU): only `inferline sql` runs that train pay.
    from inferline.models.trained import Factorization

    model = Factorization(
        num_factors=int(options.get("num_factors", DEFAULT_FACTORS)),
        l2_reg=float(options.get("l2_reg", DEFAULT_L2)),
        max_iter=int(options.get("max_iterations", DEFAULT_SWEEPS)),
    )
    started = time.monotonic()
    model.fit(_values(train, user), _values(train, item), _values(train, rating))
    seconds = time.monotonic() - started
    model.model_type_ = options.model_type
    model.label_ = rating
    model.user_col_, model.item_col_ = user, item
    model.feature_info_ = feature_info
    model.text_inputs_ = [c for c in (user, item) if pa.types.is_string(table.schema.field(c).type)]
    truth = _values(held, rating).astype(np.float64)
    guess = model.predict(np.column_stack([_values(held, user), _values(held, item)]))
    known = ~np.isnan(guess)
    final_eval = float(np.mean((truth[known] - guess[known]) ** 2)) if known.any() else None
    curve = model.loss_curve_
    model.training_info_ = [
        {
            "iteration": k,
            "loss": loss,
            "eval_loss": final_eval if k == len(curve) - 1 and evaluation.any() else None,
            "learning_rate": 0.0,
            "duration_ms": int(seconds * 1000 / len(curve)),
        }
        for k, loss in enumerate(curve)
    ]
    summary: dict[str, Any] = {
        "training_rows": int(train.num_rows),
        "evaluation_rows": int(evaluation.sum()),
        "iterations": len(curve),
        "converged": True,
        "seconds": round(seconds, 3),
    }
    if known.any():  # ML.EVALUATE's row, kept with the model (pairs of unseen users/items left out)
        found = evaluate.regression_metrics(truth[known], guess[known])
        summary["evaluation"] = {k: v if v is None or math.isfinite(v) else None for k, v in found.items()}
    return model, [user, item], summary, held


def _values(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)
