"""boosted_tree_* and random_forest_* with XGBoost (as BigQuery ML trains them).

Option -> XGBoost parameter: max_tree_depth -> max_depth, num_parallel_tree, learn_rate -> eta,
subsample, l1_reg -> alpha, l2_reg -> lambda, colsample_*, min_split_loss -> gamma,
min_tree_child_weight -> min_child_weight; booster_type='DART' -> XGBoost's dart booster with
dart_normalize_type -> normalize_type (default TREE) and dropout -> rate_drop (default 0, as
BigQuery); max_iterations -> boosting rounds; early_stop (default
TRUE) stops once the loss improves by less than min_rel_progress (default 0.01). BigQuery's
defaults: boosted trees 20 rounds, eta 0.3, depth 6, lambda 1; a random forest is one round of
num_parallel_tree (default 100) trees with eta 1, subsample 0.8 and colsample_bynode 0.8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from inferline.sql.training.options import TrainOptions

# models/trained.py imports scikit-learn (~1.5 s CPU): imported where used, so `inferline sql`
# runs that train nothing do not pay for it.
if TYPE_CHECKING:
    from inferline.models.trained import BoostedTrees

PARAMETERS = {
    "max_tree_depth": "max_depth",
    "num_parallel_tree": "num_parallel_tree",
    "learn_rate": "eta",
    "subsample": "subsample",
    "l1_reg": "alpha",
    "l2_reg": "lambda",
    "colsample_bytree": "colsample_bytree",
    "colsample_bylevel": "colsample_bylevel",
    "colsample_bynode": "colsample_bynode",
    "min_split_loss": "gamma",
    "min_tree_child_weight": "min_child_weight",
}
BOOSTED_DEFAULTS = {"eta": 0.3, "max_depth": 6, "lambda": 1.0}
FOREST_DEFAULTS = {
    "eta": 1.0,
    "max_depth": 6,
    "num_parallel_tree": 100,
    "subsample": 0.8,
    "colsample_bynode": 0.8,
}
DEFAULT_ROUNDS = 20
DEFAULT_MIN_REL_PROGRESS = 0.01


def xgboost_params(options: TrainOptions) -> dict[str, Any]:
    """XGBoost's training parameters for the options (without the objective)."""
    forest = options.model_type.startswith("random_forest")
    params: dict[str, Any] = dict(FOREST_DEFAULTS if forest else BOOSTED_DEFAULTS)
    for option, parameter in PARAMETERS.items():
        if option in options.values:
            params[parameter] = options.values[option]
    if options.get("booster_type") == "DART":
        params["booster"] = "dart"
        params["normalize_type"] = str(options.get("dart_normalize_type", "TREE")).lower()
        params["rate_drop"] = float(options.get("dropout", 0.0))
    # BigQuery's AUTO: XGBoost's hist, as its own default.
    method = str(options.get("tree_method", "AUTO")).lower()
    params["tree_method"] = "hist" if method == "auto" else method
    params["eval_metric"] = "logloss" if options.classifier else "rmse"
    return params


def estimator(options: TrainOptions) -> BoostedTrees:
    from inferline.models.trained import BoostedTreeClassifier, BoostedTreeRegressor

    forest = options.model_type.startswith("random_forest")
    early = not forest and options.get("early_stop", True)
    model = BoostedTreeClassifier if options.classifier else BoostedTreeRegressor
    return model(
        params=xgboost_params(options),
        rounds=1 if forest else options.get("max_iterations", DEFAULT_ROUNDS),
        min_rel_progress=options.get("min_rel_progress", DEFAULT_MIN_REL_PROGRESS) if early else None,
    )


def fit(
    model: BoostedTrees,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    evaluation: tuple[np.ndarray, np.ndarray] | None,
    progress: Any,
) -> BoostedTrees:
    # Hashed in Arrow, not np.unique (sorting 1M label strings cost ~1.3 s) nor a set (~0.3 s).
    if model.classifier and model.params is not None and _distinct(y) > 2:
        model.params["eval_metric"] = "mlogloss"
    return model.fit(x, y, sample_weight=weights, evaluation=evaluation, progress=progress)


def _distinct(values: Any) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values, from_pandas=True)
    return int(pc.count_distinct(values).as_py())
