"""LightGBM models: `.txt` model files (`Booster.save_model`), or scikit-learn wrappers in joblib.

Text model files hold no code; a pickled `LGBMClassifier` (`.joblib`/`.pkl`,
`framework: lightgbm`) runs code on load, so only from trusted paths. The objective says
what the output is: `binary`/`multiclass`/`multiclassova` give probabilities (a classifier:
label = most likely class, scores = the probabilities); anything else (regression, ranking,
`cross_entropy`) comes back as the raw values.

Example:
    >>> handler = LightGBMHandler()
    >>> booster = handler.load("models/churn.txt")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import from_probabilities

CLASSIFIERS = ("binary", "multiclass", "multiclassova", "softmax", "multiclass_ova", "ova", "ovr")
PICKLES = (".joblib", ".pkl", ".pickle")
_DEFAULT_NAME = re.compile(r"Column_\d+$")


class LightGBMModel:
    """A Booster plus what it says about itself; `classes_` is set only for classifiers.

    Attribute names follow scikit-learn's, so SQL and the server read them as for estimators.
    """

    classes_: np.ndarray
    feature_names_in_: np.ndarray

    def __init__(self, booster: Any, *, classes: np.ndarray | None = None) -> None:
        self.booster = booster
        self.objective = str(booster.params.get("objective", "regression")).split()[0]
        self.n_features_in_ = int(booster.num_feature())
        names = booster.feature_name()
        if names and not all(_DEFAULT_NAME.match(n) for n in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        if classes is None and self.objective in CLASSIFIERS:
            classes = np.arange(max(int(booster.params.get("num_class", 1)), 2))
        if classes is not None:
            self.classes_ = np.asarray(classes)

    @property
    def is_classifier(self) -> bool:
        return hasattr(self, "classes_")


class LightGBMHandler:
    """Runs a LightGBM Booster on whole batches with `Booster.predict`.

    Example:
        >>> LightGBMHandler().framework
        'lightgbm'
    """

    framework = "lightgbm"

    def __init__(
        self, *, batch_size: int | None = None, scores: bool = True, output: str | None = None
    ) -> None:
        self.batch_size = batch_size
        self.scores = scores
        # output: raw keeps a classifier's probabilities as the prediction (no label).
        self.output = output
        # LightGBM predicts on all cores itself; two batches at once would only contend.
        self.parallel_batches = 1

    def load(self, uri: str) -> LightGBMModel:
        lgb: Any = require("lightgbm", "lightgbm")
        with local_copy(uri) as path:
            if os.path.splitext(path)[1].lower() in PICKLES:
                return _load_wrapper(lgb, uri, path)
            try:
                booster = lgb.Booster(model_file=path)
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"model {uri}: cannot load as a LightGBM model file ({reason})") from exc
        return LightGBMModel(booster)

    def predict(self, model: LightGBMModel, inputs: np.ndarray) -> Prediction:
        values = np.asarray(model.booster.predict(standard_layout(inputs)))
        if model.is_classifier and self.output != "raw":
            return from_probabilities(values, model.classes_, scores=self.scores)
        return Prediction(prediction=values)


def _load_wrapper(lgb: Any, uri: str, path: str) -> LightGBMModel:
    ensure_trusted(uri)
    joblib: Any = require("joblib", "lightgbm")
    try:
        wrapper = joblib.load(path)
    except Exception as exc:
        raise ModelError(
            f"model {uri}: cannot load joblib/pickle file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(wrapper, lgb.LGBMModel):
        raise ModelError(
            f"model {uri}: loaded a {type(wrapper).__name__}, expected a LightGBM model "
            "(LGBMClassifier, LGBMRegressor, ...); use framework: sklearn for other estimators"
        )
    classes = getattr(wrapper, "classes_", None)
    return LightGBMModel(wrapper.booster_, classes=None if classes is None else np.asarray(classes))
