"""models/trained.py: CREATE MODEL's estimators survive skops and load as trusted types only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from inferline.errors import ModelError
from inferline.models.sklearn import SklearnHandler
from inferline.models.trained import BoostedTreeClassifier, BoostedTreeRegressor, Centroids, Components
from tests.lazy import LazyModule

sio = LazyModule("skops.io")  # imports torch (through sklearn's array API support)

X = np.array([[0.0, 1.0], [0.2, 0.9], [5.0, 4.0], [5.2, 4.1], [0.1, 1.1], [5.1, 3.9]])
Y = np.array(["a", "a", "b", "b", "a", "b"], dtype=object)


@pytest.mark.parametrize(
    "estimator",
    [
        BoostedTreeClassifier(params={"max_depth": 2, "min_child_weight": 0.0}, rounds=3),
        BoostedTreeRegressor(params={"max_depth": 2, "min_child_weight": 0.0}, rounds=3),
        Centroids(n_clusters=2),
        Components(n_components=1),
    ],
)
def test_round_trip_through_skops_and_the_handler(estimator: object, tmp_path: Path) -> None:
    target = (Y == "b").astype(np.float64) if isinstance(estimator, BoostedTreeRegressor) else Y
    pipeline = Pipeline([("scale", StandardScaler()), ("model", estimator)]).fit(X, target)
    path = tmp_path / "model.skops"
    sio.dump(pipeline, path)
    loaded = SklearnHandler().load(str(path))
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))
    if isinstance(estimator, BoostedTreeClassifier):
        assert list(loaded.predict(X)) == list(Y)
        np.testing.assert_allclose(loaded.predict_proba(X), pipeline.predict_proba(X))
    if isinstance(estimator, BoostedTreeRegressor):
        assert not hasattr(loaded, "predict_proba")


def test_centroid_ids_are_one_based_and_cosine_distance_is_one_minus_cosine() -> None:
    points = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    model = Centroids(n_clusters=2, distance_type="cosine").fit(points)
    assert sorted(model.predict(np.array([[3.0, 0.0], [0.0, 3.0]])).tolist()) == [1, 2]
    centers = model.cluster_centers_
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 1.0)
    np.testing.assert_allclose(
        model.transform(np.array([[3.0, 4.0]])), 1 - np.array([[0.6, 0.8]]) @ centers.T
    )


class Holder:
    """A class of no trusted module: a skops file holding one must be refused."""

    def __init__(self) -> None:
        self.value = 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x))


def test_other_types_in_a_skops_file_stay_untrusted(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    sio.dump(Pipeline([("model", Holder())]), path)
    with pytest.raises(ModelError, match=r"untrusted types \['tests.unit.models.test_trained.Holder'\]"):
        SklearnHandler().load(str(path))
