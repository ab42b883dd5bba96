"""The OPTIONS(...) of a training `CREATE MODEL`, checked against what each model type takes.

Every option is BigQuery ML's name; a value of the wrong kind fails naming the option and what
it takes, and options a model type does not take are all named in one line.

Example:
    >>> parse_options({"model_type": "kmeans", "num_clusters": 3.0}, "CREATE MODEL m").get("num_clusters")
    3
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferline.errors import SqlError

COMMON = ("model_type", "data_split_method", "data_split_eval_fraction", "data_split_col")
# enable_global_explain: ML.GLOBAL_EXPLAIN's attributions are always worked out here (cheap).
SUPERVISED = ("input_label_cols", "enable_global_explain")
LINEAR = ("l1_reg", "l2_reg", "max_iterations", "learn_rate")
CLASS_WEIGHTS = ("auto_class_weights", "class_weights")
TREES = (
    "tree_method",
    "max_tree_depth",
    "num_parallel_tree",
    "subsample",
    "l1_reg",
    "l2_reg",
    "colsample_bytree",
    "colsample_bylevel",
    "colsample_bynode",
    "min_split_loss",
    "min_tree_child_weight",
)
BOOSTED = (
    *TREES,
    "learn_rate",
    "max_iterations",
    "early_stop",
    "min_rel_progress",
    "booster_type",
    "dart_normalize_type",
    "dropout",
)
DNN = (
    "hidden_units",
    "activation_fn",
    "batch_size",
    "dropout",
    "learn_rate",
    "max_iterations",
    "l2_reg",
    "optimizer",
    "early_stop",
)
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "linear_reg": (*SUPERVISED, *LINEAR),
    "logistic_reg": (*SUPERVISED, *LINEAR, *CLASS_WEIGHTS),
    "boosted_tree_regressor": (*SUPERVISED, *BOOSTED),
    "boosted_tree_classifier": (*SUPERVISED, *BOOSTED, *CLASS_WEIGHTS),
    "random_forest_regressor": (*SUPERVISED, *TREES),
    "random_forest_classifier": (*SUPERVISED, *TREES, *CLASS_WEIGHTS),
    "dnn_regressor": (*SUPERVISED, *DNN),
    "dnn_classifier": (*SUPERVISED, *DNN, *CLASS_WEIGHTS),
    "kmeans": (
        "num_clusters",
        "distance_type",
        "kmeans_init_method",
        "max_iterations",
        "standardize_features",
    ),
    "pca": ("num_principal_components", "scale_features"),
    "matrix_factorization": (
        "feedback_type",
        "user_col",
        "item_col",
        "rating_col",
        "num_factors",
        "l2_reg",
        "max_iterations",
    ),
}
MODEL_TYPES = tuple(MODEL_OPTIONS)
CLASSIFIERS = ("logistic_reg", "boosted_tree_classifier", "random_forest_classifier", "dnn_classifier")
UNSUPERVISED = ("kmeans", "pca")
FACTORIZATION = "matrix_factorization"  # its label is rating_col (default 'rating')
SPLITS = ("AUTO_SPLIT", "RANDOM", "CUSTOM", "SEQ", "NO_SPLIT")
ACTIVATIONS = {"RELU": "relu", "SIGMOID": "logistic", "TANH": "tanh", "LINEAR": "identity"}


def _number(low: float, *, above: bool = False, high: float | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, float):
            return None
        if value < low or (above and value == low) or (high is not None and value > high):
            return None
        return value

    return check


def _whole(low: int, high: int | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, float) and value == int(value) and low <= value <= (high or value):
            return int(value)
        return None

    return check


def _boolean(value: Any) -> Any:
    return value if isinstance(value, bool) else None


def _choice(*names: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return str(value).upper() if isinstance(value, str) and value.upper() in names else None

    return check


def _units(value: Any) -> Any:
    whole = _whole(1)
    if isinstance(value, list) and value and all(whole(v) is not None for v in value):
        return [int(v) for v in value]
    return None


def _weights(value: Any) -> Any:
    # BigQuery: class_weights=[STRUCT('label', 0.2), ...]; the STRUCT arrives as a 2-list.
    if not isinstance(value, list) or not value:
        return None
    pairs = {}
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], float) and item[1] >= 0):
            return None
        pairs[item[0]] = item[1]
    return pairs


# Options whose meaning depends on the model type: boosted trees' dropout is DART's rate of
# dropped trees (XGBoost's rate_drop), a DNN's is a layer dropout the MLP does not have.
BOOSTED_CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "dropout": (_number(0.0, high=1.0), "a number between 0 and 1 (booster_type='DART')"),
}

# option -> (check returning the value or None, what it takes)
CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "l1_reg": (_number(0.0), "a number >= 0"),
    "l2_reg": (_number(0.0), "a number >= 0"),
    "learn_rate": (_number(0.0, above=True), "a number > 0"),
    "max_iterations": (_whole(1), "a whole number >= 1"),
    "auto_class_weights": (_boolean, "TRUE or FALSE"),
    "class_weights": (_weights, "[STRUCT('label', weight), ...] with weights >= 0"),
    "max_tree_depth": (_whole(1), "a whole number >= 1"),
    "num_parallel_tree": (_whole(1), "a whole number >= 1"),
    "subsample": (_number(0.0, above=True, high=1.0), "a number in (0, 1]"),
    "colsample_bytree": (_number(0.0, above=True, high=1.0), "a number in (0, 1]"),
    "colsample_bylevel": (_number(0.0, above=True, high=1.0), "a number in (0, 1]"),
    "colsample_bynode": (_number(0.0, above=True, high=1.0), "a number in (0, 1]"),
    "min_split_loss": (_number(0.0), "a number >= 0"),
    "min_tree_child_weight": (_number(0.0), "a number >= 0"),
    "early_stop": (_boolean, "TRUE or FALSE"),
    "enable_global_explain": (_boolean, "TRUE or FALSE"),
    "booster_type": (_choice("GBTREE", "DART"), "'GBTREE' or 'DART'"),
    "dart_normalize_type": (_choice("TREE", "FOREST"), "'TREE' or 'FOREST'"),
    "tree_method": (_choice("AUTO", "EXACT", "APPROX", "HIST"), "'AUTO', 'EXACT', 'APPROX' or 'HIST'"),
    "min_rel_progress": (_number(0.0), "a number >= 0"),
    "hidden_units": (_units, "a list of whole numbers >= 1, e.g. [32, 16]"),
    "activation_fn": (_choice(*ACTIVATIONS), f"one of {', '.join(ACTIVATIONS)}"),
    "batch_size": (_whole(1), "a whole number >= 1"),
    "dropout": (_number(0.0, high=0.0), "0 (scikit-learn's MLP has no dropout)"),
    "optimizer": (_choice("ADAM", "SGD"), "'ADAM' or 'SGD'"),
    "num_clusters": (_whole(2, 100), "a whole number between 2 and 100"),
    "distance_type": (_choice("EUCLIDEAN", "COSINE"), "'EUCLIDEAN' or 'COSINE'"),
    "kmeans_init_method": (_choice("RANDOM", "KMEANS++"), "'RANDOM' or 'KMEANS++'"),
    "standardize_features": (_boolean, "TRUE or FALSE"),
    "num_principal_components": (_whole(1), "a whole number >= 1"),
    "scale_features": (_boolean, "TRUE or FALSE"),
    "data_split_eval_fraction": (_number(0.0, above=True, high=0.99), "a number between 0 and 1"),
    "data_split_col": (lambda v: v if isinstance(v, str) else None, "a column name"),
    "feedback_type": (_choice("EXPLICIT"), "'EXPLICIT' (IMPLICIT is not supported)"),
    "user_col": (lambda v: v if isinstance(v, str) else None, "a column name"),
    "item_col": (lambda v: v if isinstance(v, str) else None, "a column name"),
    "rating_col": (lambda v: v if isinstance(v, str) else None, "a column name"),
    "num_factors": (_whole(1), "a whole number >= 1"),
}


@dataclass(frozen=True)
class TrainOptions:
    """The OPTIONS(...) of one training CREATE MODEL, checked; `values` holds the model type's
    own options by name (converted: whole numbers are ints, names upper case)."""

    model_type: str
    label: str | None
    split: str = "AUTO_SPLIT"
    eval_fraction: float | None = None
    split_column: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def classifier(self) -> bool:
        return self.model_type in CLASSIFIERS

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def is_training(model_type: str) -> bool:
    return model_type in MODEL_TYPES


def parse_options(options: dict[str, Any], where: str) -> TrainOptions:
    """Check OPTIONS(...) for the model type; one error line names every unsupported option."""
    model_type = str(options["model_type"]).lower()
    # BigQuery's kmeans and pca take no data_split_* options: they train on every row.
    common = ("model_type",) if model_type in UNSUPERVISED else COMMON
    allowed = (*common, *MODEL_OPTIONS[model_type])
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown)
        raise SqlError(
            f"{where}: {'option' if len(unknown) == 1 else 'options'} {shown} "
            f"{'is' if len(unknown) == 1 else 'are'} not supported for model_type='{model_type}' "
            f"(supported: {', '.join(allowed)})"
        )
    values: dict[str, Any] = {}
    checks = {**CHECKS, **BOOSTED_CHECKS} if model_type.startswith("boosted") else CHECKS
    for name, value in options.items():
        if name in checks:
            check, takes = checks[name]
            checked = check(value)
            if checked is None:
                raise SqlError(f"{where}: {name} must be {takes}, got {value!r}")
            values[name] = checked
    label = None
    if model_type == FACTORIZATION:
        label = str(values.get("rating_col", "rating"))
    elif model_type not in UNSUPERVISED:
        labels = options.get("input_label_cols", ["label"])
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
            raise SqlError(f"{where}: input_label_cols must name one column, e.g. ['body_mass_g']")
        label = labels[0]
    split = str(
        options.get("data_split_method", "NO_SPLIT" if model_type in UNSUPERVISED else "AUTO_SPLIT")
    ).upper()
    if split not in SPLITS:
        raise SqlError(
            f"{where}: data_split_method={split!r} is not supported (supported: {', '.join(SPLITS)})"
        )
    column = values.pop("data_split_col", None)
    if split in ("CUSTOM", "SEQ") and column is None:
        raise SqlError(f"{where}: data_split_method='{split}' needs data_split_col='column'")
    if column is not None and split not in ("CUSTOM", "SEQ"):
        raise SqlError(f"{where}: data_split_col applies to data_split_method='CUSTOM' or 'SEQ'")
    dart = [name for name in ("dart_normalize_type", "dropout") if name in values]
    if dart and values.get("booster_type") != "DART":
        raise SqlError(f"{where}: {', '.join(dart)} applies to booster_type='DART'")
    if values.get("auto_class_weights") and "class_weights" in values:
        raise SqlError(f"{where}: give auto_class_weights or class_weights, not both")
    return TrainOptions(
        model_type=model_type,
        label=label,
        split=split,
        eval_fraction=values.pop("data_split_eval_fraction", None),
        split_column=column,
        values=values,
    )
