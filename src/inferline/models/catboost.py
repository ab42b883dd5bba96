"""CatBoost models: `.cbm` model files (`save_model`), or scikit-learn-style wrappers in joblib.

`.cbm` files hold trees and no code; a pickled `CatBoostClassifier` (`.joblib`/`.pkl`,
`framework: catboost`) runs code on load, so only from trusted paths. The loss function
says what the output is: `Logloss`/`CrossEntropy`/`MultiClass`/`MultiClassOneVsAll` are
classifiers (label = most likely class, scores = `predict(prediction_type='Probability')`);
anything else (`RMSE`, `MultiRMSE`, ranking) comes back as CatBoostRegressor gives it
(`Exponent` for Poisson/Tweedie, else the raw formula value).

Example:
    >>> handler = CatBoostHandler()
    >>> model = handler.load("models/churn.cbm")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.errors import ModelError
from inferline.models.trees import TreeHandler, TreeModel, wrapper_classes

CLASSIFIERS = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")
EXPONENT = ("Poisson", "Tweedie")


def catboost_model(model: Any, *, classes: np.ndarray | None = None) -> TreeModel:
    """A fitted CatBoost model and what it says (loss function, feature names, class labels)."""
    objective = str(model.get_all_params().get("loss_function", "RMSE")).split(":")[0]
    if objective in CLASSIFIERS and classes is None:
        labels = model.classes_
        classes = np.asarray(labels) if labels is not None and len(labels) else np.arange(2)
    names = [str(n) for n in model.feature_names_ or []]
    # Unnamed features are called "0", "1", ...: those are positions, not column names.
    named = names and names != [str(i) for i in range(len(names))]
    return TreeModel(
        model,
        objective=objective,
        features=len(names),
        names=names if named else None,
        classes=classes if objective in CLASSIFIERS else None,
    )


class CatBoostHandler(TreeHandler):
    """Runs a CatBoost model on whole batches with its `predict`.

    Example:
        >>> CatBoostHandler().framework
        'catboost'
    """

    framework = "catboost"
    module = "catboost"
    wrappers = "CatBoost"
    kind = "a CatBoost model (CatBoostClassifier, CatBoostRegressor, ...)"

    def load_file(self, library: Any, uri: str, path: str) -> TreeModel:
        model = library.CatBoost()
        try:
            model.load_model(path, format="cbm")
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"model {uri}: cannot load as a CatBoost model file ({reason}); "
                "save it with model.save_model(path) (format cbm)"
            ) from exc
        return catboost_model(model)

    def from_wrapper(self, wrapper: Any) -> TreeModel:
        classes = wrapper_classes(wrapper)
        return catboost_model(wrapper, classes=classes if classes is not None and len(classes) else None)

    def raw_values(self, model: TreeModel, inputs: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        if model.is_classifier:
            kind = "Probability"
        else:
            kind = "Exponent" if model.objective.startswith(EXPONENT) else "RawFormulaVal"
        return np.asarray(model.booster.predict(inputs, prediction_type=kind, thread_count=threads or -1))
