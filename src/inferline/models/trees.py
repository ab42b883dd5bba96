"""What XGBoost, LightGBM and CatBoost handlers share: one constructor, joblib wrappers, outputs.

Each framework module subclasses `TreeHandler` with how to read its own model file and
what its booster says (objective, feature count and names, classes), and returns a
`TreeModel`. The objective decides classifier or raw values (not the output's shape): a
classifier's probabilities become labels and scores through `outputs.from_probabilities`,
anything else comes back as the booster gives it. Pickled scikit-learn wrappers
(`.joblib`/`.pkl`) run code on load, so they load from trusted paths only.

Example:
    >>> from inferline.models.xgboost import XGBoostHandler
    >>> XGBoostHandler(scores=False).parallel_batches
    1
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import check_output_mode, from_probabilities

PICKLES = (".joblib", ".pkl", ".pickle")


class TreeModel:
    """A booster plus what it says about itself; `classes_` is set only for classifiers.

    `n_features_in_`/`feature_names_in_`/`classes_` follow scikit-learn's names, so SQL and
    the server find inputs and output names the way they do for estimators. `gives_labels`
    marks objectives whose output already is a class index (XGBoost's `multi:softmax`).

    Example:
        >>> TreeModel(object(), objective="reg", features=2, names=None, classes=None).is_classifier
        False
    """

    classes_: np.ndarray
    feature_names_in_: np.ndarray

    def __init__(
        self,
        booster: Any,
        *,
        objective: str,
        features: int,
        names: list[str] | None,
        classes: np.ndarray | None,
        gives_labels: bool = False,
    ) -> None:
        self.booster = booster
        self.objective = objective
        self.n_features_in_ = features
        self.gives_labels = gives_labels
        if names:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        if classes is not None:
            self.classes_ = np.asarray(classes)

    @property
    def is_classifier(self) -> bool:
        return hasattr(self, "classes_")


class TreeHandler:
    """Runs a gradient-boosted tree model on whole batches; subclasses read their own files.

    Subclasses set `framework` (also the extra's name), `module` (what to import) and
    `wrappers` (the scikit-learn wrapper base class's name in that module), `kind`, and implement
    `load_file`, `from_wrapper` and `raw_values`.
    """

    framework: str
    module: str
    wrappers: str
    kind: str  # for errors: "an XGBoost model (XGBClassifier, XGBRegressor, ...)"

    def __init__(
        self, *, batch_size: int | None = None, scores: bool = True, output: str | None = None
    ) -> None:
        self.batch_size = batch_size
        self.scores = scores
        # output: raw keeps a classifier's probabilities as the prediction (no label).
        self.output = output
        # Boosters predict on all cores themselves; two batches at once would only contend.
        self.parallel_batches = 1

    def load(self, uri: str) -> TreeModel:
        library: Any = require(self.module, self.framework)
        check_output_mode(self.output, where=f"model {uri}")
        with local_copy(uri) as path:
            if os.path.splitext(path)[1].lower() in PICKLES:
                return self.from_wrapper(self._wrapper(library, uri, path))
            return self.load_file(library, uri, path)

    def _wrapper(self, library: Any, uri: str, path: str) -> Any:
        ensure_trusted(uri)
        joblib: Any = require("joblib", self.framework)
        try:
            wrapper = joblib.load(path)
        except Exception as exc:
            raise ModelError(
                f"model {uri}: cannot load joblib/pickle file ({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(wrapper, getattr(library, self.wrappers)):
            raise ModelError(
                f"model {uri}: loaded a {type(wrapper).__name__}, expected {self.kind}; "
                "use framework: sklearn for other estimators"
            )
        return wrapper

    def load_file(self, library: Any, uri: str, path: str) -> TreeModel:
        raise NotImplementedError

    def from_wrapper(self, wrapper: Any) -> TreeModel:
        raise NotImplementedError

    def raw_values(self, model: TreeModel, inputs: np.ndarray) -> np.ndarray:
        """The booster's output for a batch: probabilities for classifiers, else values."""
        raise NotImplementedError

    def predict(self, model: TreeModel, inputs: np.ndarray) -> Prediction:
        values = np.asarray(self.raw_values(model, standard_layout(inputs)))
        if model.gives_labels:
            labels = values.astype(np.int64)
            return Prediction(prediction=model.classes_[labels] if model.is_classifier else labels)
        if model.is_classifier and self.output != "raw":
            return from_probabilities(values, model.classes_, scores=self.scores)
        return Prediction(prediction=values)


def wrapper_classes(wrapper: Any) -> np.ndarray | None:
    """A fitted scikit-learn wrapper's `classes_` (classifiers only)."""
    classes = getattr(wrapper, "classes_", None)
    return None if classes is None else np.asarray(classes)
