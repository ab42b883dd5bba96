"""`CREATE MODEL ds.m OPTIONS(model_type='linear_reg'|'logistic_reg', ...) AS SELECT ...`:
BigQuery ML's training, run locally with scikit-learn.

The query runs in DuckDB to Arrow; every column but the label (`input_label_cols`, default
`label`) is a feature. BigQuery's automatic preprocessing becomes the first step of one
scikit-learn Pipeline: numbers have NULLs replaced by the mean and are standardised, strings are
one-hot encoded (unseen values ignored). The fitted Pipeline is saved with skops (no pickle) as
the next version of `ds.m` in the model store and registered in the catalog, so ML.PREDICT,
ML.EVALUATE, pipelines and `inferline serve` all run it. Its outputs are named as BigQuery's:
`predicted_<label>`, and for classifiers `predicted_<label>_probs` (a list of {label, prob}).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.sql.catalog import CatalogModel

log = logging.getLogger(__name__)

MODEL_TYPES = ("linear_reg", "logistic_reg")
OPTIONS = (
    "model_type",
    "input_label_cols",
    "l2_reg",
    "max_iterations",
    "data_split_method",
    "data_split_eval_fraction",
    "auto_class_weights",
)
SPLITS = ("AUTO_SPLIT", "RANDOM", "NO_SPLIT")
SPLIT_SEED = 0  # BigQuery's RANDOM split is random; a fixed seed keeps a local run repeatable
# BigQuery's AUTO_SPLIT: no split under 500 rows, 20% up to 50,000, then 10,000 rows.
AUTO_SMALL, AUTO_LARGE, AUTO_EVAL_ROWS = 500, 50_000, 10_000


@dataclass(frozen=True)
class TrainOptions:
    """The OPTIONS(...) of one training CREATE MODEL, checked."""

    model_type: str
    label: str
    l2_reg: float = 0.0
    max_iterations: int | None = None
    split: str = "AUTO_SPLIT"
    eval_fraction: float | None = None
    balanced: bool = False

    @property
    def classifier(self) -> bool:
        return self.model_type == "logistic_reg"


def is_training(model_type: str) -> bool:
    return model_type in MODEL_TYPES


def parse_options(options: dict[str, Any], where: str) -> TrainOptions:
    """Check OPTIONS(...) against what local training supports; one error line names the first
    unsupported option."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SqlError(
            f"{where}: option {unknown[0]!r} is not supported for training (supported: {', '.join(OPTIONS)})"
        )
    labels = options.get("input_label_cols", ["label"])
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise SqlError(f"{where}: input_label_cols must name one column, e.g. ['body_mass_g']")
    split = str(options.get("data_split_method", "AUTO_SPLIT")).upper()
    if split not in SPLITS:
        raise SqlError(
            f"{where}: data_split_method={split!r} is not supported (supported: {', '.join(SPLITS)})"
        )
    fraction = options.get("data_split_eval_fraction")
    if fraction is not None and not (isinstance(fraction, float) and 0 < fraction < 1):
        raise SqlError(
            f"{where}: data_split_eval_fraction must be a number between 0 and 1, got {fraction!r}"
        )
    l2_reg = options.get("l2_reg", 0.0)
    if not isinstance(l2_reg, float) or l2_reg < 0:
        raise SqlError(f"{where}: l2_reg must be a number >= 0, got {l2_reg!r}")
    iterations = options.get("max_iterations")
    if iterations is not None and not (isinstance(iterations, float) and iterations >= 1):
        raise SqlError(f"{where}: max_iterations must be a whole number >= 1, got {iterations!r}")
    balanced = options.get("auto_class_weights", False)
    if not isinstance(balanced, bool):
        raise SqlError(f"{where}: auto_class_weights must be TRUE or FALSE, got {balanced!r}")
    model_type = str(options["model_type"]).lower()
    if balanced and model_type != "logistic_reg":
        raise SqlError(f"{where}: auto_class_weights applies to logistic_reg only")
    return TrainOptions(
        model_type=model_type,
        label=labels[0],
        l2_reg=l2_reg,
        max_iterations=int(iterations) if iterations is not None else None,
        split=split,
        eval_fraction=fraction,
        balanced=balanced,
    )


def output_names(options: TrainOptions) -> list[str]:
    """BigQuery's ML.PREDICT columns for a trained model."""
    predicted = f"predicted_{options.label}"
    return [predicted, f"{predicted}_probs"] if options.classifier else [predicted]


def _feature_kinds(table: pa.Table, label: str, where: str) -> tuple[list[str], list[str]]:
    """(features, the string ones among them); other types fail naming the column."""
    if label not in table.column_names:
        raise SqlError(
            f"{where}: the query has no label column {label!r} (columns: {', '.join(table.column_names)}); "
            "name it with OPTIONS(input_label_cols=['column'])"
        )
    features, text = [], []
    for field in table.schema:
        if field.name == label:
            continue
        t = field.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            text.append(field.name)
        elif not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_decimal(t)
        ):
            raise SqlError(
                f"{where}: feature column {field.name!r} is {t}; training takes numbers and strings "
                "(cast or drop it in the SELECT)"
            )
        features.append(field.name)
    if not features:
        raise SqlError(f"{where}: the query has no feature columns besides the label {label!r}")
    return features, text


def feature_matrix(table: pa.Table, features: list[str], text: list[str]) -> np.ndarray:
    """The columns as ML.PREDICT feeds them (sql/tensors.scalar_matrix): float64, or an object
    matrix holding strings when some inputs are text; NULL is NaN (numbers) or None (strings)."""
    parts = []
    for name in features:
        column = table.column(name)
        if name in text:
            parts.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=object))
        else:
            floats = pc.cast(column, pa.float64()).fill_null(math.nan)
            parts.append(np.asarray(floats.to_numpy(zero_copy_only=False), dtype=np.float64))
    if not text:
        return np.column_stack(parts)
    matrix = np.empty((table.num_rows, len(parts)), dtype=object)
    for j, part in enumerate(parts):
        matrix[:, j] = part
    return matrix


def build_pipeline(options: TrainOptions, features: list[str], text: list[str]) -> Any:
    """BigQuery's automatic preprocessing, then the estimator, as one unfitted Pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [i for i, name in enumerate(features) if name not in text]
    strings = [i for i, name in enumerate(features) if name in text]
    steps: list[tuple[str, Any, list[int]]] = []
    if numeric:
        scale = Pipeline([("impute", SimpleImputer(strategy="mean")), ("standardize", StandardScaler())])
        steps.append(("numeric", scale, numeric))
    if strings:
        onehot = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", missing_values=None, fill_value="")),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        steps.append(("categorical", onehot, strings))
    estimator: Any
    if options.model_type == "linear_reg":
        estimator = Ridge(alpha=options.l2_reg) if options.l2_reg > 0 else LinearRegression()
    else:
        estimator = LogisticRegression(
            C=1.0 / options.l2_reg if options.l2_reg > 0 else np.inf,
            max_iter=options.max_iterations or 100,
            class_weight="balanced" if options.balanced else None,
        )
    pipeline = Pipeline([("preprocess", ColumnTransformer(steps)), ("model", estimator)])
    return pipeline


def split_rows(count: int, options: TrainOptions) -> np.ndarray:
    """A boolean mask of the evaluation rows (BigQuery's data_split_method)."""
    if options.split == "NO_SPLIT":
        return np.zeros(count, dtype=bool)
    if options.split == "RANDOM":
        evaluated = round(count * (options.eval_fraction or 0.2))
    elif count < AUTO_SMALL:
        evaluated = 0
    elif count <= AUTO_LARGE:
        evaluated = round(count * 0.2)
    else:
        evaluated = AUTO_EVAL_ROWS
    mask = np.zeros(count, dtype=bool)
    mask[np.random.default_rng(SPLIT_SEED).permutation(count)[:evaluated]] = True
    return mask


def fit(
    table: pa.Table, options: TrainOptions, where: str
) -> tuple[Any, list[str], dict[str, Any], pa.Table]:
    """Fit on the query's rows; the fitted Pipeline, its input columns, a training summary and
    the evaluation rows (the training rows themselves when nothing is held out, as BigQuery)."""
    features, text = _feature_kinds(table, options.label, where)
    table = table.filter(pc.is_valid(table.column(options.label)))
    if table.num_rows == 0:
        raise SqlError(f"{where}: the query gives no rows with a label {options.label!r} to train on")
    evaluation = split_rows(table.num_rows, options)
    train = table.filter(pa.array(~evaluation))
    x = feature_matrix(train, features, text)
    y = np.asarray(train.column(options.label).to_numpy(zero_copy_only=False))
    if options.classifier:
        y = y.astype(object) if y.dtype == object else y
        if len(set(y.tolist())) < 2:
            raise SqlError(
                f"{where}: the label {options.label!r} has one value; a classifier needs two or more"
            )
    else:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise SqlError(f"{where}: linear_reg needs a numeric label; {options.label!r} is not") from None
    pipeline = build_pipeline(options, features, text)
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("%s: training stopped at max_iterations before converging", where)
    # ML.PREDICT feeds these columns as strings (models/sklearn.py's text_inputs).
    pipeline.text_inputs_ = list(text)
    summary = {
        "training_rows": int(train.num_rows),
        "evaluation_rows": int(evaluation.sum()),
        "converged": converged,
    }
    held_out = table.filter(pa.array(evaluation)) if evaluation.any() else train
    return pipeline, features, summary, held_out


def store_model(
    pipeline: Any, name: str, store_root: str, features: list[str], metadata: dict[str, Any]
) -> str:
    """Save with skops as the next version of `name` in the store; the stored file's URI."""
    import skops.io as sio

    from inferline.models.store import ModelStore

    with tempfile.TemporaryDirectory(prefix="inferline-train-") as folder:
        path = os.path.join(folder, "model.skops")
        sio.dump(pipeline, path)
        version = ModelStore(store_root).add(
            name, path, framework="sklearn", inputs=features, metadata=metadata
        )
    return version.uri


def train(
    table: pa.Table, name: str, options: TrainOptions, store_root: str, where: str
) -> tuple[CatalogModel, pa.Table]:
    """Fit and store; the catalog entry naming the stored version, and the evaluation rows."""
    pipeline, features, summary, held_out = fit(table, options, where)
    outputs = output_names(options)
    metadata = {
        "outputs": outputs,
        "model_type": options.model_type,
        "input_label_cols": [options.label],
        "training": summary,
    }
    uri = store_model(pipeline, name, store_root, features, metadata)
    log.info(
        "%s: trained %s on %d rows (%d held out for evaluation), stored as %s",
        where,
        options.model_type,
        summary["training_rows"],
        summary["evaluation_rows"],
        uri,
    )
    entry = CatalogModel(
        name=name,
        framework="sklearn",
        path=uri,
        inputs=features,
        outputs=outputs,
        label_columns=[options.label],
    )
    return entry, held_out
