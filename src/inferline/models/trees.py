"""What XGBoost, LightGBM and CatBoost handlers share: one constructor, joblib wrappers, outputs.

Each framework module subclasses `TreeHandler` with how to read its own model file and
what its booster says (objective, feature count and names, classes), and returns a
`TreeModel`. The objective decides classifier or raw values (not the output's shape): a
classifier's probabilities become labels and scores through `outputs.from_probabilities`,
anything else comes back as the booster gives it. Pickled scikit-learn wrappers
(`.joblib`/`.pkl`) run code on load, so they load from trusted paths only.

Calls side by side share the cores: the local engine predicts one batch per core, and while
another tree prediction runs in the process, each call runs on one thread (`raw_values`'
`threads=1`); a call alone (SQL, a server with one worker) keeps the library's threads, all
cores. One OpenMP call per batch spun its threads at barriers whenever the engine's reader or
writer took a core: 8-13% more CPU for the same trees than one thread per batch.

Example:
    >>> from inferline.models.xgboost import XGBoostHandler
    >>> XGBoostHandler(scores=False).parallel_batches == (os.cpu_count() or 1)
    True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted
from inferline.models.files import local_copy
from inferline.models.layout import standard_layout
from inferline.models.outputs import check_output_mode, from_probabilities

PICKLES = (".joblib", ".pkl", ".pickle")


class _Running:
    """How many tree predictions run in this process right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @contextmanager
    def call(self) -> Iterator[int]:
        """Count one call while it runs; gives how many run, this one included."""
        with self._lock:
            self._count += 1
            running = self._count
        try:
            yield running
        finally:
            with self._lock:
                self._count -= 1


RUNNING = _Running()


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
        # One batch per core, each on one thread while others run (see the module's docstring).
        self.parallel_batches = os.cpu_count() or 1

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

    def raw_values(self, model: TreeModel, inputs: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """The booster's output for a batch: probabilities for classifiers, else values;
        on `threads` threads (None: the library's default)."""
        raise NotImplementedError

    def predict(self, model: TreeModel, inputs: np.ndarray) -> Prediction:
        with RUNNING.call() as running:
            threads = 1 if running > 1 else None
            values = np.asarray(self.raw_values(model, standard_layout(inputs), threads=threads))
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
