"""XGBoost Booster files and joblib wrappers, trained here on iris, against XGBoost's own API."""

from __future__ import annotations

import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from inferline.errors import ModelError
from inferline.models.base import detect_framework, handler_for

xgb = pytest.importorskip("xgboost")

X, Y = load_iris(return_X_y=True)


def _save(booster: object, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Saving model in the UBJSON format as default"
        booster.save_model(str(path))  # type: ignore[attr-defined]
    return path


@pytest.mark.parametrize("suffix", [".json", ".ubj", ".model", ".bst"])
def test_booster_files_give_labels_and_the_boosters_probabilities(tmp_path: Path, suffix: str) -> None:
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(X, label=Y), 8)
    path = _save(booster, tmp_path / f"iris{suffix}")
    assert detect_framework(str(path)) == "xgboost"
    handler = handler_for(str(path))
    model = handler.load(str(path))
    got = handler.predict(model, X)
    want = booster.predict(xgb.DMatrix(X))
    np.testing.assert_allclose(got.scores, want, rtol=1e-6)
    assert got.prediction.tolist() == want.argmax(axis=1).tolist()
    assert model.n_features_in_ == 4 and model.classes_.tolist() == [0, 1, 2]


def test_binary_logistic_is_a_classifier_and_regression_stays_raw(tmp_path: Path) -> None:
    binary = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=Y == 2), 5)
    handler = handler_for(str(_save(binary, tmp_path / "virginica.json")))
    got = handler.predict(handler.load(str(tmp_path / "virginica.json")), X)
    p = binary.predict(xgb.DMatrix(X))
    np.testing.assert_allclose(got.scores[:, 1], p, rtol=1e-6)
    assert got.prediction.tolist() == (p > 0.5).astype(int).tolist()

    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    regressor = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(diabetes_x, label=diabetes_y), 5)
    path = _save(regressor, tmp_path / "diabetes.ubj")
    model = handler.load(str(path))
    got = handler.predict(model, diabetes_x)
    assert got.scores is None and not hasattr(model, "classes_")
    np.testing.assert_allclose(got.prediction, regressor.predict(xgb.DMatrix(diabetes_x)), rtol=1e-6)


def test_sklearn_wrappers_in_joblib_keep_their_classes(tmp_path: Path) -> None:
    names = np.array(["setosa", "versicolor", "virginica"])
    classifier = xgb.XGBClassifier(n_estimators=8).fit(X, Y)
    joblib.dump(classifier, tmp_path / "iris.joblib")
    handler = handler_for(str(tmp_path / "iris.joblib"), framework="xgboost")
    model = handler.load(str(tmp_path / "iris.joblib"))
    got = handler.predict(model, X)
    np.testing.assert_allclose(got.scores, classifier.predict_proba(X), rtol=1e-6)
    assert got.prediction.tolist() == classifier.predict(X).tolist()
    assert names[got.prediction].tolist()[:1] == ["setosa"]

    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(ModelError, match=r"dict.joblib: loaded a dict, expected an XGBoost model"):
        handler.load(str(tmp_path / "dict.joblib"))


def test_feature_names_are_kept_for_sql_and_bad_files_fail_in_one_line(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(frame, label=Y), 3)
    model = handler_for("m.json", framework="xgboost").load(str(_save(booster, tmp_path / "named.json")))
    assert model.feature_names_in_.tolist() == list(frame.columns)

    (tmp_path / "broken.bst").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"broken.bst: cannot load as an XGBoost model \(") as info:
        handler_for("m.bst").load(str(tmp_path / "broken.bst"))
    assert "\n" not in str(info.value)
