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
import re
import threading
import weakref
from typing import Any

import numpy as np

from inferline.errors import ModelError
from inferline.models.trees import TreeHandler, TreeModel, wrapper_classes

PROBABILITIES = ("binary:logistic", "multi:softprob")
LABELS = ("multi:softmax", "binary:hinge")
_XGB_PREFIX = re.compile(r"^\[[\d:]+\] [^ ]+: ")


def booster_model(booster: Any, *, classes: np.ndarray | None = None) -> TreeModel:
    """A Booster and what its saved config says (objective, classes)."""
    config = json.loads(booster.save_config())
    objective = str(config["learner"]["objective"]["name"])
    if classes is None and objective in PROBABILITIES + LABELS:
        count = int(config["learner"]["learner_model_param"].get("num_class", "0") or 0)
        classes = np.arange(max(count, 2))
    return TreeModel(
        booster,
        objective=objective,
        features=int(booster.num_features()),
        names=list(booster.feature_names or []),
        classes=classes,
        gives_labels=objective in LABELS,
    )


class XGBoostHandler(TreeHandler):
    """Runs an XGBoost Booster on whole batches with `inplace_predict`.

    Example:
        >>> XGBoostHandler().framework
        'xgboost'
    """

    framework = "xgboost"
    module = "xgboost"
    wrappers = "XGBModel"
    kind = "an XGBoost model (XGBClassifier, XGBRegressor, ...)"

    def load_file(self, library: Any, uri: str, path: str) -> TreeModel:
        with open(path, "rb") as handle:
            data = bytearray(handle.read())
        booster = library.Booster()
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
        return booster_model(booster)

    def from_wrapper(self, wrapper: Any) -> TreeModel:
        return booster_model(wrapper.get_booster(), classes=wrapper_classes(wrapper))

    def raw_values(self, model: TreeModel, inputs: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        booster = model.booster if threads is None else _threaded(model, threads)
        return np.asarray(booster.inplace_predict(inputs, validate_features=False))


_COPIES: weakref.WeakKeyDictionary[TreeModel, dict[int, Any]] = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()


def _threaded(model: TreeModel, threads: int) -> Any:
    """A copy of the booster that predicts on `threads` threads, made on first use: XGBoost's
    thread count is the booster's setting, not a predict argument, and setting it on a booster
    that another thread predicts with is not safe."""
    with _COPIES_LOCK:
        copies = _COPIES.setdefault(model, {})
        if threads not in copies:
            copy = model.booster.copy()
            copy.set_param({"nthread": threads})
            copies[threads] = copy
        return copies[threads]
