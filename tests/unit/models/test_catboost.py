"""CatBoost `.cbm` files and joblib wrappers, trained here on iris, against CatBoost's own API."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from inferline.errors import ModelError
from inferline.models.base import detect_framework, handler_for

catboost = pytest.importorskip("catboost")

X, Y = load_iris(return_X_y=True)
QUIET = {"iterations": 10, "depth": 3, "verbose": False, "thread_count": 1, "allow_writing_files": False}


def test_cbm_files_give_labels_and_catboosts_probabilities(tmp_path: Path) -> None:
    names = np.array(["setosa", "versicolor", "virginica"])[Y]
    classifier = catboost.CatBoostClassifier(loss_function="MultiClass", **QUIET).fit(X, names)
    classifier.save_model(str(tmp_path / "iris.cbm"))
    assert detect_framework(str(tmp_path / "iris.cbm")) == "catboost"
    handler = handler_for(str(tmp_path / "iris.cbm"))
    model = handler.load(str(tmp_path / "iris.cbm"))
    got = handler.predict(model, X)
    np.testing.assert_allclose(got.scores, classifier.predict_proba(X), rtol=1e-9)
    assert got.prediction.tolist() == classifier.predict(X).reshape(-1).tolist()
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert model.n_features_in_ == 4 and not hasattr(model, "feature_names_in_")  # "0".."3" are positions


def test_binary_named_features_and_regressions_stay_raw(tmp_path: Path) -> None:
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    binary = catboost.CatBoostClassifier(**QUIET).fit(frame, Y == 2)
    binary.save_model(str(tmp_path / "virginica.cbm"))
    handler = handler_for(str(tmp_path / "virginica.cbm"))
    model = handler.load(str(tmp_path / "virginica.cbm"))
    got = handler.predict(model, X)
    np.testing.assert_allclose(got.scores, binary.predict_proba(frame), rtol=1e-9)
    assert model.feature_names_in_.tolist() == ["sl", "sw", "pl", "pw"]

    dx, dy = load_diabetes(return_X_y=True)
    regressor = catboost.CatBoostRegressor(**QUIET).fit(dx, dy)
    regressor.save_model(str(tmp_path / "diabetes.cbm"))
    model = handler.load(str(tmp_path / "diabetes.cbm"))
    out = handler.predict(model, dx)
    assert out.scores is None and not model.is_classifier
    np.testing.assert_allclose(out.prediction, regressor.predict(dx), rtol=1e-9)

    two = catboost.CatBoostRegressor(loss_function="MultiRMSE", **QUIET).fit(dx, np.column_stack([dy, -dy]))
    two.save_model(str(tmp_path / "two.cbm"))
    out = handler.predict(handler.load(str(tmp_path / "two.cbm")), dx)
    assert out.prediction.shape == (len(dx), 2) and out.scores is None
    np.testing.assert_allclose(out.prediction, two.predict(dx), rtol=1e-9)


def test_joblib_wrappers_and_files_that_are_not_models(tmp_path: Path) -> None:
    classifier = catboost.CatBoostClassifier(**QUIET).fit(X, Y)
    joblib.dump(classifier, tmp_path / "iris.joblib")
    handler = handler_for(str(tmp_path / "iris.joblib"), framework="catboost")
    got = handler.predict(handler.load(str(tmp_path / "iris.joblib")), X)
    np.testing.assert_allclose(got.scores, classifier.predict_proba(X), rtol=1e-9)
    assert got.prediction.tolist() == classifier.predict(X).reshape(-1).tolist()

    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(ModelError, match=r"dict.joblib: loaded a dict, expected a CatBoost model"):
        handler.load(str(tmp_path / "dict.joblib"))
    (tmp_path / "notes.cbm").write_bytes(b"hello")
    with pytest.raises(ModelError, match=r"notes.cbm: cannot load as a CatBoost model file \("):
        handler.load(str(tmp_path / "notes.cbm"))
