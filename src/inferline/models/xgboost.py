"""XGBoost models: `.json`/`.ubj`/`.model`/`.bst` Booster files, or scikit-learn wrappers in joblib.

Booster files hold no code and load with `Booster.load_model`; a pickled `XGBClassifier`
(`.joblib`/`.pkl`, `framework: xgboost`) runs code on load, so only from trusted paths.
Batches run through `Booster.inplace_predict` (no DMatrix copy). The objective says what
the output is: `binary:logistic`/`multi:softprob` are probabilities (a classifier: label =
most likely class, scores = the probabilities), `multi:softmax`/`binary:hinge` are labels,
anything else (`reg:*`, `binary:logitraw`, ranking) comes back as the raw values.

Example:
    >>> handler = XGBoostHandler()
    >>> booster = handler.load("models/churn.json")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import from_probabilities

PROBABILITIES = ("binary:logistic", "multi:softprob")
LABELS = ("multi:softmax", "binary:hinge")
PICKLES = (".joblib", ".pkl", ".pickle")
_XGB_PREFIX = re.compile(r"^\[[\d:]+\] [^ ]+: ")


class XGBoostModel:
    """A Booster plus what it says about itself; `classes_` is set only for classifiers.

    `n_features_in_`/`feature_names_in_`/`classes_` follow scikit-learn's names, so SQL and
    the server find inputs and output names the way they do for estimators.
    """

    classes_: np.ndarray
    feature_names_in_: np.ndarray

    def __init__(self, booster: Any, *, classes: np.ndarray | None = None) -> None:
        self.booster = booster
        config = json.loads(booster.save_config())
        self.objective = str(config["learner"]["objective"]["name"])
        self.n_features_in_ = int(booster.num_features())
        names = booster.feature_names
        if names:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        if classes is None and self.objective in PROBABILITIES + LABELS:
            count = int(config["learner"]["learner_model_param"].get("num_class", "0") or 0)
            classes = np.arange(max(count, 2))
        if classes is not None:
            self.classes_ = np.asarray(classes)

    @property
    def is_classifier(self) -> bool:
        return hasattr(self, "classes_")


class XGBoostHandler:
    """Runs an XGBoost Booster on whole batches with `inplace_predict`.

    Example:
        >>> XGBoostHandler().framework
        'xgboost'
    """

    framework = "xgboost"

    def __init__(
        self, *, batch_size: int | None = None, scores: bool = True, output: str | None = None
    ) -> None:
        self.batch_size = batch_size
        self.scores = scores
        # output: raw keeps a classifier's probabilities as the prediction (no label).
        self.output = output
        # XGBoost predicts on all cores itself; two batches at once would only contend.
        self.parallel_batches = 1

    def load(self, uri: str) -> XGBoostModel:
        xgb: Any = require("xgboost", "xgboost")
        with local_copy(uri) as path:
            if os.path.splitext(path)[1].lower() in PICKLES:
                return _load_wrapper(xgb, uri, path)
            with open(path, "rb") as handle:
                data = bytearray(handle.read())
        booster = xgb.Booster()
        try:
            # From memory, XGBoost tells JSON from UBJSON by their first bytes; from a file
            # it guesses by the suffix and warns for .model/.bst.
            booster.load_model(data)
        except Exception as exc:  # XGBoostError: "[time] file.cc:line: reason" + a stack trace
            reason = _XGB_PREFIX.sub("", str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
            raise ModelError(
                f"model {uri}: cannot load as an XGBoost model ({reason or type(exc).__name__}); "
                "save it with Booster.save_model to .json or .ubj"
            ) from exc
        return XGBoostModel(booster)

    def predict(self, model: XGBoostModel, inputs: np.ndarray) -> Prediction:
        values = np.asarray(model.booster.inplace_predict(standard_layout(inputs), validate_features=False))
        if model.objective in LABELS:
            labels = values.astype(np.int64)
            return Prediction(prediction=model.classes_[labels] if model.is_classifier else labels)
        if model.is_classifier and self.output != "raw":
            return from_probabilities(values, model.classes_, scores=self.scores)
        return Prediction(prediction=values)


def _load_wrapper(xgb: Any, uri: str, path: str) -> XGBoostModel:
    ensure_trusted(uri)
    joblib: Any = require("joblib", "xgboost")
    try:
        wrapper = joblib.load(path)
    except Exception as exc:
        raise ModelError(
            f"model {uri}: cannot load joblib/pickle file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(wrapper, xgb.XGBModel):
        raise ModelError(
            f"model {uri}: loaded a {type(wrapper).__name__}, expected an XGBoost model "
            "(XGBClassifier, XGBRegressor, ...); use framework: sklearn for other estimators"
        )
    classes = getattr(wrapper, "classes_", None)
    return XGBoostModel(wrapper.get_booster(), classes=None if classes is None else np.asarray(classes))
