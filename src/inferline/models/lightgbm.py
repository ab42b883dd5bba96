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

import re
from typing import Any

import numpy as np

from inferline.errors import ModelError
from inferline.models.trees import TreeHandler, TreeModel, wrapper_classes

CLASSIFIERS = ("binary", "multiclass", "multiclassova", "softmax", "multiclass_ova", "ova", "ovr")
_DEFAULT_NAME = re.compile(r"Column_\d+$")


def booster_model(booster: Any, *, classes: np.ndarray | None = None) -> TreeModel:
    """A Booster and what its parameters say (objective, classes); Column_0.. are not names."""
    objective = str(booster.params.get("objective", "regression")).split()[0]
    if classes is None and objective in CLASSIFIERS:
        classes = np.arange(max(int(booster.params.get("num_class", 1)), 2))
    names = booster.feature_name()
    named = names and not all(_DEFAULT_NAME.match(n) for n in names)
    return TreeModel(
        booster,
        objective=objective,
        features=int(booster.num_feature()),
        names=list(names) if named else None,
        classes=classes,
    )


class LightGBMHandler(TreeHandler):
    """Runs a LightGBM Booster on whole batches with `Booster.predict`.

    Example:
        >>> LightGBMHandler().framework
        'lightgbm'
    """

    framework = "lightgbm"
    module = "lightgbm"
    wrappers = "LGBMModel"
    kind = "a LightGBM model (LGBMClassifier, LGBMRegressor, ...)"

    def load_file(self, library: Any, uri: str, path: str) -> TreeModel:
        try:
            booster = library.Booster(model_file=path)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {uri}: cannot load as a LightGBM model file ({reason})") from exc
        return booster_model(booster)

    def from_wrapper(self, wrapper: Any) -> TreeModel:
        return booster_model(wrapper.booster_, classes=wrapper_classes(wrapper))

    def raw_values(self, model: TreeModel, inputs: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        # num_threads is a prediction parameter: it sets the calling thread's OpenMP width.
        options = {"num_threads": threads} if threads else {}
        return np.asarray(model.booster.predict(inputs, **options))
