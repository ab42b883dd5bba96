"""LightGBM model files and joblib wrappers, trained here on iris, against LightGBM's own API."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from inferline.errors import ModelError
from inferline.models.base import detect_framework, handler_for

lgb = pytest.importorskip("lightgbm")

X, Y = load_iris(return_X_y=True)
QUIET = {"verbose": -1}


def test_text_model_files_give_labels_and_the_boosters_probabilities(tmp_path: Path) -> None:
    booster = lgb.train({"objective": "multiclass", "num_class": 3, **QUIET}, lgb.Dataset(X, label=Y), 10)
    booster.save_model(str(tmp_path / "iris.txt"))
    assert detect_framework(str(tmp_path / "iris.txt")) == "lightgbm"
    handler = handler_for(str(tmp_path / "iris.txt"))
    model = handler.load(str(tmp_path / "iris.txt"))
    got = handler.predict(model, X)
    want = booster.predict(X)
    np.testing.assert_allclose(got.scores, want, rtol=1e-9)
    assert got.prediction.tolist() == want.argmax(axis=1).tolist()
    assert model.n_features_in_ == 4 and model.classes_.tolist() == [0, 1, 2]
    assert not hasattr(model, "feature_names_in_")  # Column_0.. are LightGBM's defaults, not names


def test_binary_and_regression_objectives(tmp_path: Path) -> None:
    binary = lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(X, label=Y == 2), 5)
    binary.save_model(str(tmp_path / "virginica.txt"))
    handler = handler_for(str(tmp_path / "virginica.txt"))
    got = handler.predict(handler.load(str(tmp_path / "virginica.txt")), X)
    np.testing.assert_allclose(got.scores[:, 1], binary.predict(X), rtol=1e-9)

    dx, dy = load_diabetes(return_X_y=True)
    regressor = lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(dx, label=dy), 5)
    regressor.save_model(str(tmp_path / "diabetes.txt"))
    model = handler.load(str(tmp_path / "diabetes.txt"))
    out = handler.predict(model, dx)
    assert out.scores is None and not hasattr(model, "classes_")
    np.testing.assert_allclose(out.prediction, regressor.predict(dx), rtol=1e-9)


def test_joblib_wrappers_keep_their_classes(tmp_path: Path) -> None:
    labels = np.array(["setosa", "versicolor", "virginica"])[Y]
    classifier = lgb.LGBMClassifier(n_estimators=10, **QUIET).fit(X, labels)
    joblib.dump(classifier, tmp_path / "iris.joblib")
    handler = handler_for(str(tmp_path / "iris.joblib"), framework="lightgbm")
    got = handler.predict(handler.load(str(tmp_path / "iris.joblib")), X)
    np.testing.assert_allclose(got.scores, classifier.predict_proba(X), rtol=1e-9)
    assert got.prediction.tolist() == classifier.predict(X).tolist()


def test_a_text_file_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ModelError, match=r"notes.txt: unknown model format '.txt'"):
        detect_framework(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelError, match=r"notes.txt: cannot load as a LightGBM model file \("):
        handler_for("m.txt", framework="lightgbm").load(str(tmp_path / "notes.txt"))
