"""scikit-learn models from `.joblib`/`.pkl` (pickle, trusted paths only) or safe `.skops`."""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted
from inferline.models.files import local_copy

# Types a .skops file may contain without the user vouching for them; also the estimators
# CREATE MODEL ... AS SELECT trains (models/trained.py: data only, no code on load).
_SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
TRUSTED_TYPES = (
    "inferline.models.trained.BoostedTreeClassifier",
    "inferline.models.trained.BoostedTreeRegressor",
    "inferline.models.trained.Centroids",
    "inferline.models.trained.Components",
    "inferline.models.trained.Factorization",
)


class SklearnHandler:
    """Runs any estimator with `predict` (and `predict_proba` when it has one).

    Example:
        >>> handler = SklearnHandler()
        >>> model = handler.load("examples/iris/models/iris-1.joblib")  # doctest: +SKIP
    """

    framework = "sklearn"

    def __init__(self, *, batch_size: int | None = None, scores: bool = True) -> None:
        self.batch_size = batch_size
        self.scores = scores
        # Estimators predict on one core and release the GIL: one batch per core at a time.
        self.parallel_batches = os.cpu_count() or 1

    def load(self, uri: str) -> Any:
        require("sklearn", "sklearn")
        with local_copy(uri) as path:
            if zipfile.is_zipfile(path):
                model = _load_skops(uri, path)
            else:
                ensure_trusted(uri)
                joblib: Any = require("joblib", "sklearn")
                try:
                    model = joblib.load(path)
                except Exception as exc:
                    raise ModelError(
                        f"model {uri}: cannot load as a scikit-learn joblib/pickle file "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
        if not hasattr(model, "predict"):
            raise ModelError(
                f"model {uri}: loaded a {type(model).__name__}, expected an estimator with predict()"
            )
        return model

    def text_inputs(self, model: Any) -> list[str]:
        """String input columns of a model trained by `CREATE MODEL ... AS SELECT` (sql/training/)."""
        return [str(name) for name in getattr(model, "text_inputs_", [])]

    def imputes_missing(self, model: Any) -> bool:
        """A Pipeline trained by CREATE MODEL imputes NULL features as at training (numbers: the
        training mean; strings: the NULL category), as BigQuery ML does at prediction."""
        return getattr(model, "model_type_", None) is not None

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        prediction = np.asarray(model.predict(inputs))
        scores = None
        if self.scores and hasattr(model, "predict_proba"):
            scores = np.asarray(model.predict_proba(inputs), dtype=np.float64)
        return Prediction(prediction=prediction, scores=scores)


def _load_skops(uri: str, path: str) -> Any:
    sio: Any = require("skops.io", "sklearn")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelError(f"model {uri}: corrupt .skops file ({type(exc).__name__}: {exc})") from exc
    unsafe = [t for t in untrusted if not t.startswith(_SAFE_PREFIXES) and t not in TRUSTED_TYPES]
    if unsafe:
        raise ModelError(
            f"model {uri}: .skops file contains untrusted types {unsafe}; "
            "inspect them with skops.io.get_untrusted_types and re-save"
        )
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise ModelError(f"model {uri}: cannot load .skops file ({exc})") from exc
