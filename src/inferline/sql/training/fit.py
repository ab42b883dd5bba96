"""Fit one model type on the training query's rows and store it as a model-store version.

The saved object is always a scikit-learn Pipeline: BigQuery's automatic preprocessing
(sql/training/data.py), then the estimator (a scikit-learn one, or one of models/trained.py's).
It records what the SQL side needs on itself: `text_inputs_` (the string columns, fed as text),
`model_type_`, `label_`, and `training_info_` (ML.TRAINING_INFO's rows).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.sql.catalog import CatalogModel
from inferline.sql.training import clustering, data, dnn, explain, factorization, info, linear, matrix, trees
from inferline.sql.training.evaluation import Predictions
from inferline.sql.training.evaluation import metrics as evaluation_metrics
from inferline.sql.training.options import TrainOptions
from inferline.sql.training.progress import TrainingReport

log = logging.getLogger("inferline.sql")
# progress(iteration, {"train": loss, "eval": loss}) after each XGBoost round
Iteration = Callable[[int, dict[str, float]], None]


@dataclass
class Fitted:
    """A fitted Pipeline and what training learned about the rows."""

    pipeline: Any
    features: list[str]
    summary: dict[str, Any]
    held_out: pa.Table


def output_names(options: TrainOptions, components: int = 0) -> list[str]:
    """BigQuery's ML.PREDICT columns for a trained model."""
    if options.model_type == "kmeans":
        return ["CENTROID_ID", "NEAREST_CENTROIDS_DISTANCE"]
    if options.model_type == "pca":
        return [f"principal_component_{k}" for k in range(1, components + 1)]
    if options.model_type == "matrix_factorization":
        return [f"predicted_{options.label}"]
    predicted = f"predicted_{options.label}"
    return [predicted, f"{predicted}_probs"] if options.classifier else [predicted]


def fit(table: pa.Table, options: TrainOptions, where: str, progress: TrainingReport | None = None) -> Fitted:
    """Fit on the query's rows; the evaluation rows are the split's held-out rows (the training
    rows themselves when nothing is held out, as BigQuery)."""
    if options.model_type == "matrix_factorization":
        return Fitted(*factorization.fit(table, options, where))
    features, text = data.feature_kinds(table, options, where)
    if options.label is not None and table.column(options.label).null_count:  # else no copy
        table = table.filter(pc.is_valid(table.column(options.label)))
    if table.num_rows == 0:
        raise SqlError(f"{where}: the query gives no rows to train on")
    evaluation = data.split_rows(table, options, where)
    train = table.filter(pa.array(~evaluation)) if evaluation.any() else table
    held = table.filter(pa.array(evaluation)) if evaluation.any() else None
    if train.num_rows == 0:
        raise SqlError(f"{where}: the data split leaves no training rows")
    if progress is not None:
        progress.start(options.model_type, train.num_rows, int(evaluation.sum()))
    preprocess = data.preprocessor(options, features, text)
    x, processed_mean = matrix.fit_transform(preprocess, train, features, text)
    x_eval = matrix.transform(preprocess, held, features, text) if held is not None else None
    started = time.monotonic()
    if options.label is None:
        model = _fit_unsupervised(options, x)
        y = y_eval = None
    else:
        y = data.labels(train, options, where)
        y_eval = data.labels(held, options, where) if held is not None else None
        weights = data.class_weights(y, options, where) if options.classifier else None
        model = _fit_supervised(
            options, x, y, weights, x_eval, y_eval, progress.iteration if progress else None
        )
    seconds = time.monotonic() - started
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("preprocess", preprocess), ("model", model)])
    # ML.PREDICT feeds these columns as strings (models/sklearn.py's text_inputs).
    pipeline.text_inputs_ = list(text)
    pipeline.model_type_ = options.model_type
    pipeline.label_ = options.label
    predictions = Predictions(model)
    pipeline.training_info_ = _iterations(model, options, x, y, x_eval, y_eval, seconds, predictions)
    info.describe(pipeline, train, processed_mean, features, text)  # ML.FEATURE_INFO, ML.WEIGHTS, ...
    # ML.DETECT_ANOMALIES; ML.GLOBAL_EXPLAIN with enable_global_explain=TRUE, as BigQuery (SHAP
    # values of trees cost about as much as the training).
    global_explain = bool(options.get("enable_global_explain"))
    if global_explain or options.model_type == "kmeans":
        raw = data.feature_matrix(train, features, text)  # the rows as ML.PREDICT feeds them
        explain.describe(pipeline, features, raw, global_explain=global_explain)
    summary: dict[str, Any] = {
        "training_rows": int(train.num_rows),
        "evaluation_rows": int(evaluation.sum()),
        "iterations": len(pipeline.training_info_),
        "converged": getattr(model, "converged_", True),
        "seconds": round(seconds, 3),
    }
    if y is not None:  # ML.EVALUATE's row, kept with the model as BigQuery does
        rows, truth = (x_eval, y_eval) if x_eval is not None and y_eval is not None else (x, y)
        found = evaluation_metrics(predictions, rows, truth, classifier=options.classifier)
        summary["evaluation"] = {k: v if v is None or math.isfinite(v) else None for k, v in found.items()}
    return Fitted(pipeline, features, summary, held if held is not None else train)


def _fit_supervised(
    options: TrainOptions,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    x_eval: np.ndarray | None,
    y_eval: np.ndarray | None,
    progress: Iteration | None,
) -> Any:
    if options.model_type in data.TREE_TYPES:
        evaluation = (x_eval, y_eval) if x_eval is not None and y_eval is not None else None
        return trees.fit(trees.estimator(options), x, y, weights, evaluation, progress)
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if options.model_type.startswith("dnn"):
            model = dnn.fit(dnn.estimator(options, len(x)), x, y, weights)
        else:
            model = linear.fit(linear.estimator(options), x, y, weights)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("%s: training stopped at max_iterations before converging", options.model_type)
    model.converged_ = converged
    return model


def _fit_unsupervised(options: TrainOptions, x: np.ndarray) -> Any:
    if options.model_type == "kmeans":
        count = clustering.clusters(options, len(x))
        if count > len(x):
            raise SqlError(f"CREATE MODEL: num_clusters={count} is more than the {len(x)} training rows")
        return clustering.kmeans(options, len(x)).fit(x)
    return clustering.pca(options).fit(x)


def _loss(
    model: Any, options: TrainOptions, x: np.ndarray, y: np.ndarray | None, predictions: Predictions
) -> float | None:
    """BigQuery's loss on some rows: mean squared error (regressors), log loss (classifiers),
    mean squared distance to the nearest centroid (kmeans)."""
    from sklearn import metrics

    if options.model_type == "kmeans":
        return float(np.mean(np.min(model.transform(x), axis=1) ** 2))
    if y is None or options.model_type == "pca":
        return None
    if options.classifier:
        return log_loss(y, predictions.probabilities(x), model.classes_)
    return float(metrics.mean_squared_error(y, predictions.values(x)))


def log_loss(y: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    """scikit-learn's log_loss (probabilities clipped to [eps, 1 - eps]) with each label's class
    found by Arrow's hash lookup: log_loss one-hot encodes string labels in Python (~8 s at 1M)."""
    from sklearn import metrics

    found = pc.index_in(
        pa.array(y, from_pandas=True), value_set=pa.array(np.asarray(classes), from_pandas=True)
    )
    if found.null_count:  # a label the model has no class for: scikit-learn's error
        return float(metrics.log_loss(y, probabilities, labels=classes))
    codes = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)
    eps = np.finfo(probabilities.dtype).eps
    chosen = np.clip(probabilities[np.arange(len(codes)), codes], eps, 1 - eps)
    return float(-np.mean(np.log(chosen)))


def _iterations(
    model: Any,
    options: TrainOptions,
    x: np.ndarray,
    y: np.ndarray | None,
    x_eval: np.ndarray | None,
    y_eval: np.ndarray | None,
    seconds: float,
    predictions: Predictions,
) -> list[dict[str, Any]]:
    """ML.TRAINING_INFO's rows: iteration, loss, eval_loss, learning_rate, duration_ms."""
    history = getattr(model, "history_", None)
    if history:  # XGBoost: one row per boosting round
        train = list(next(iter(history["train"].values())))
        held = list(next(iter(history["eval"].values()))) if "eval" in history else [None] * len(train)
        squared = not options.classifier  # rmse -> BigQuery's mean squared loss
        rate = float((model.params or {}).get("eta", 0.3))
        return [
            {
                "iteration": i,
                "loss": loss**2 if squared else loss,
                "eval_loss": (ev**2 if squared else ev) if ev is not None else None,
                "learning_rate": rate,
                "duration_ms": int(seconds * 1000 / len(train)),
            }
            for i, (loss, ev) in enumerate(zip(train, held, strict=True))
        ]
    curve = getattr(model, "loss_curve_", None)
    final_eval = _loss(model, options, x_eval, y_eval, predictions) if x_eval is not None else None
    if curve:  # the MLP: one row per epoch, eval loss known at the end
        rate = float(model.learning_rate_init)
        return [
            {
                "iteration": i,
                "loss": float(loss),
                "eval_loss": final_eval if i == len(curve) - 1 else None,
                "learning_rate": rate,
                "duration_ms": int(seconds * 1000 / len(curve)),
            }
            for i, loss in enumerate(curve)
        ]
    return [
        {
            "iteration": 0,
            "loss": _loss(model, options, x, y, predictions),
            "eval_loss": final_eval,
            "learning_rate": linear.learning_rate(options) if options.label is not None else 0.0,
            "duration_ms": int(seconds * 1000),
        }
    ]


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
    table: pa.Table,
    name: str,
    options: TrainOptions,
    store_root: str,
    where: str,
    *,
    transform: dict[str, Any] | None = None,
) -> tuple[CatalogModel, pa.Table, dict[str, Any]]:
    """Fit and store; the catalog entry naming the stored version, the evaluation rows and the
    training summary (progress and the summary are logged, see progress.py). `transform` (a
    TRANSFORM clause's, see transform.py's `portable`) goes into the store metadata, so the
    stored model runs it outside SQL too (models/transformed.py)."""
    rounds = (
        options.get("max_iterations", trees.DEFAULT_ROUNDS)
        if options.model_type.startswith("boosted")
        else None
    )
    progress = TrainingReport(where, rounds=rounds)
    fitted = fit(table, options, where, progress)
    components = int(fitted.pipeline[-1].pca_.n_components_) if options.model_type == "pca" else 0
    outputs = output_names(options, components)
    metadata = {
        "outputs": outputs,
        "model_type": options.model_type,
        "input_label_cols": [options.label] if options.label else [],
        "training": fitted.summary,
    }
    if transform is not None:
        metadata["transform"] = transform
    uri = store_model(fitted.pipeline, name, store_root, fitted.features, metadata)
    progress.finish(fitted.summary, fitted.pipeline.training_info_, uri)
    entry = CatalogModel(
        name=name,
        framework="sklearn",
        path=uri,
        inputs=fitted.features,
        outputs=outputs,
        label_columns=[options.label] if options.label else [],
    )
    return entry, fitted.held_out, fitted.summary
