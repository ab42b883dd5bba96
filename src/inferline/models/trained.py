"""Estimators that `CREATE MODEL ... AS SELECT` trains (sql/training/), saved inside skops files.

Each is the last step of a scikit-learn Pipeline whose first step is BigQuery's automatic
preprocessing, so any consumer (ML.PREDICT, pipelines, `inferline serve`) runs the Pipeline
as an ordinary scikit-learn model. They hold only data (arrays, numbers, XGBoost's own JSON
text), so the sklearn handler trusts these exact types in a .skops file (models/sklearn.py):
loading one runs no code of the file's choosing.

- `BoostedTrees`: an XGBoost booster kept as its JSON model text (boosted trees and random
  forests); `predict_proba`/`classes_` for classifiers, `contributions` for SHAP values.
- `Centroids`: k-means; `predict` gives BigQuery's 1-based CENTROID_ID, `transform` the
  distance to every centroid (euclidean, or cosine: 1 - cos).
- `Components`: PCA; `predict` gives the principal components.
- `Factorization`: explicit matrix factorization (ALS); `predict` rates (user, item) rows.

Example:
    >>> import numpy as np
    >>> Centroids(n_clusters=2).fit(np.array([[0.0], [0.1], [5.0], [5.1]])).n_clusters
    2
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

SEED = 0


class BoostedTrees(BaseEstimator):  # type: ignore[misc]
    """(Base of the two below.) An XGBoost booster trained on a preprocessed matrix, stored as XGBoost's JSON.

    `params` are XGBoost's training parameters; `rounds` the boosting rounds (BigQuery's
    max_iterations); `min_rel_progress` stops early when the loss (the evaluation rows' when
    there are some) improves by less than that fraction (BigQuery's early_stop).
    """

    classifier = False

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        rounds: int = 20,
        min_rel_progress: float | None = None,
    ) -> None:
        self.params = params
        self.rounds = rounds
        self.min_rel_progress = min_rel_progress

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        sample_weight: np.ndarray | None = None,
        evaluation: tuple[np.ndarray, np.ndarray] | None = None,
        progress: Any = None,
    ) -> BoostedTrees:
        import xgboost as xgb

        params = dict(self.params or {})
        targets: Any = y
        if self.classifier:  # `y` may be an Arrow array: labels are encoded in Arrow
            self.classes_, targets = _encode(y)
            if len(self.classes_) > 2:
                params.update(objective="multi:softprob", num_class=len(self.classes_))
            else:
                params["objective"] = "binary:logistic"
        else:
            targets = np.asarray(y)
            params.setdefault("objective", "reg:squarederror")
        params.setdefault("seed", SEED)
        train = xgb.DMatrix(x, label=targets, weight=sample_weight)
        evals = [(train, "train")]
        if evaluation is not None and len(evaluation[1]):
            labels = evaluation[1]
            if self.classifier:
                labels = _codes(labels, self.classes_)
            evals.append((xgb.DMatrix(evaluation[0], label=labels), "eval"))
        history: dict[str, dict[str, list[float]]] = {}
        callbacks = _callbacks(self.min_rel_progress, progress)
        booster = xgb.train(
            params,
            train,
            num_boost_round=self.rounds,
            evals=evals,
            evals_result=history,
            verbose_eval=False,
            callbacks=callbacks,
        )
        self.booster_json_ = bytes(booster.save_raw(raw_format="json")).decode()
        self.history_ = {name: dict(metrics) for name, metrics in history.items()}
        self.n_features_in_ = int(x.shape[1])
        self._booster = booster
        return self

    def booster(self) -> Any:
        cached = self.__dict__.get("_booster")
        if cached is None:
            import xgboost as xgb

            cached = xgb.Booster()
            cached.load_model(bytearray(self.booster_json_.encode()))
            self._booster = cached
        return cached

    def _raw(self, x: np.ndarray) -> np.ndarray:
        matrix = np.ascontiguousarray(x, dtype=np.float64)
        return np.asarray(self.booster().inplace_predict(matrix, validate_features=False))

    def predict(self, x: np.ndarray) -> np.ndarray:
        values = self._raw(x)
        if not self.classifier:
            return values
        return np.asarray(self.classes_[np.argmax(_as_probabilities(values), axis=1)])

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP values (XGBoost's pred_contribs): (n, features + 1), the last column the bias;
        for several classes (n, classes, features + 1). In the model's margin (log-odds)."""
        import xgboost as xgb

        return np.asarray(self.booster().predict(xgb.DMatrix(x), pred_contribs=True))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_booster", None)  # rebuilt from booster_json_; never saved
        return state


def _callbacks(min_rel_progress: float | None, progress: Any) -> list[Any]:
    """XGBoost callbacks: stop once the last loss improved by less than `min_rel_progress` of
    the one before (BigQuery's early_stop), on the evaluation rows when given; tell
    `progress(iteration, {data: loss})` after every round."""
    import xgboost as xgb

    class RelativeProgress(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            losses = list(next(iter(evals_log[list(evals_log)[-1]].values())))
            if len(losses) < 2 or losses[-2] == 0:
                return False
            return bool((losses[-2] - losses[-1]) / abs(losses[-2]) < (min_rel_progress or 0.0))

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            progress(epoch + 1, {k: float(list(v.values())[0][-1]) for k, v in evals_log.items()})
            return False

    callbacks: list[Any] = [RelativeProgress()] if min_rel_progress else []
    if progress is not None:
        callbacks.append(Report())
    return callbacks


def _encode(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(sorted classes, each label's class number): hashed in Arrow; np.unique sorts every row,
    which for 1M strings took as long as a quarter of the training."""
    import pyarrow.compute as pc

    values = _arrow(labels)
    classes = np.sort(np.asarray(pc.unique(values).to_numpy(zero_copy_only=False)))
    return classes, _codes(values, classes)


def _codes(labels: Any, classes: np.ndarray) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(_arrow(labels), value_set=pa.array(classes))
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.float64)


def _arrow(labels: Any) -> Any:
    """Labels as an Arrow array (numpy's converted once; Arrow's as they are)."""
    import pyarrow as pa

    if isinstance(labels, pa.Array | pa.ChunkedArray):
        return labels
    return pa.array(labels, from_pandas=True)


def _as_probabilities(values: np.ndarray) -> np.ndarray:
    if values.ndim == 1:  # binary:logistic gives P(second class)
        return np.column_stack([1.0 - values, values])
    return values


class BoostedTreeClassifier(BoostedTrees):
    """Boosted trees (or a random forest) over classes; `predict_proba` in `classes_` order."""

    classifier = True

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _as_probabilities(self._raw(x)).astype(np.float64)


class BoostedTreeRegressor(BoostedTrees):
    """Boosted trees (or a random forest) giving numbers."""

    classifier = False


class Centroids(BaseEstimator):  # type: ignore[misc]
    """k-means with BigQuery's outputs; `distance_type` 'euclidean' or 'cosine'."""

    def __init__(
        self,
        n_clusters: int = 4,
        distance_type: str = "euclidean",
        init: str = "k-means++",
        max_iter: int = 20,
    ) -> None:
        self.n_clusters = n_clusters
        self.distance_type = distance_type
        self.init = init
        self.max_iter = max_iter

    def _space(self, x: np.ndarray) -> np.ndarray:
        matrix = np.asarray(x, dtype=np.float64)
        if self.distance_type != "cosine":
            return matrix
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1.0, norms)

    def fit(self, x: np.ndarray, y: Any = None) -> Centroids:
        from sklearn.cluster import KMeans

        kmeans = KMeans(n_clusters=self.n_clusters, init=self.init, max_iter=self.max_iter, random_state=SEED)
        kmeans.fit(self._space(x))
        centers = np.asarray(kmeans.cluster_centers_, dtype=np.float64)
        if self.distance_type == "cosine":
            norms = np.linalg.norm(centers, axis=1, keepdims=True)
            centers = centers / np.where(norms == 0, 1.0, norms)
        self.cluster_centers_ = centers
        self.n_iter_ = int(kmeans.n_iter_)
        self.inertia_ = float(kmeans.inertia_)
        self.n_features_in_ = int(np.asarray(x).shape[1])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The distance from each row to each centroid (centroid k in column k - 1)."""
        space = self._space(x)
        if self.distance_type == "cosine":
            return np.asarray(1.0 - space @ self.cluster_centers_.T)
        squared = (
            (space**2).sum(axis=1)[:, None]
            - 2 * space @ self.cluster_centers_.T
            + (self.cluster_centers_**2).sum(axis=1)[None, :]
        )
        return np.asarray(np.sqrt(np.maximum(squared, 0.0)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """BigQuery's CENTROID_ID: 1-based."""
        return np.asarray(np.argmin(self.transform(x), axis=1) + 1, dtype=np.int64)


class Components(BaseEstimator):  # type: ignore[misc]
    """PCA; `predict` gives the rows' principal components (BigQuery's principal_component_k)."""

    def __init__(self, n_components: int | None = None) -> None:
        self.n_components = n_components

    def fit(self, x: np.ndarray, y: Any = None) -> Components:
        from sklearn.decomposition import PCA

        self.pca_ = PCA(n_components=self.n_components, random_state=SEED).fit(
            np.asarray(x, dtype=np.float64)
        )
        self.n_features_in_ = int(np.asarray(x).shape[1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.pca_.transform(np.asarray(x, dtype=np.float64)))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x)


class Factorization(BaseEstimator):  # type: ignore[misc]
    """Explicit-feedback matrix factorization (BigQuery's matrix_factorization), fitted by
    alternating least squares: rating ~ mean + user intercept + item intercept + user factors .
    item factors, every part L2-regularised by `l2_reg`. `predict` takes (user, item) rows; an
    unknown user or item gives NaN."""

    def __init__(self, num_factors: int = 10, l2_reg: float = 1.0, max_iter: int = 20) -> None:
        self.num_factors = num_factors
        self.l2_reg = l2_reg
        self.max_iter = max_iter

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> Factorization:
        user_codes, self.users_ = _factorize(users)
        item_codes, self.items_ = _factorize(items)
        ratings = np.asarray(ratings, dtype=np.float64)
        rng = np.random.default_rng(SEED)
        self.mean_ = float(ratings.mean())
        item_factors = rng.normal(0.0, 0.1, (len(self.items_), self.num_factors))
        item_bias = np.zeros(len(self.items_))
        user_bias = np.zeros(len(self.users_))
        self.loss_curve_: list[float] = []
        for _ in range(self.max_iter):
            target = ratings - self.mean_ - item_bias[item_codes]
            user_factors, user_bias = _least_squares(
                user_codes, item_codes, target, item_factors, self.l2_reg
            )
            target = ratings - self.mean_ - user_bias[user_codes]
            item_factors, item_bias = _least_squares(
                item_codes, user_codes, target, user_factors, self.l2_reg
            )
            predicted = (
                self.mean_
                + user_bias[user_codes]
                + item_bias[item_codes]
                + np.sum(user_factors[user_codes] * item_factors[item_codes], axis=1)
            )
            self.loss_curve_.append(float(np.mean((ratings - predicted) ** 2)))
        self.user_factors_, self.user_bias_ = user_factors, user_bias
        self.item_factors_, self.item_bias_ = item_factors, item_bias
        self.n_features_in_ = 2
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted ratings of (user, item) rows; NaN for a user or item not seen in training."""
        rows = np.asarray(x, dtype=object)
        user = _codes_of(rows[:, 0], self.users_)
        item = _codes_of(rows[:, 1], self.items_)
        known = (user >= 0) & (item >= 0)
        out = np.full(len(rows), np.nan)
        u, i = user[known], item[known]
        out[known] = (
            self.mean_
            + self.user_bias_[u]
            + self.item_bias_[i]
            + np.sum(self.user_factors_[u] * self.item_factors_[i], axis=1)
        )
        return out


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """(each value's code, the distinct values as Python values, sorted)."""
    distinct = sorted(set(np.asarray(values, dtype=object).tolist()))
    return _codes_of(values, distinct), distinct


def _codes_of(values: np.ndarray, known: list[Any]) -> np.ndarray:
    where = {value: k for k, value in enumerate(known)}
    return np.asarray([where.get(v, -1) for v in np.asarray(values, dtype=object).tolist()], dtype=np.int64)


def _least_squares(
    codes: np.ndarray, others: np.ndarray, target: np.ndarray, other_factors: np.ndarray, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """One ALS half-step: each entity's factors and intercept by ridge regression on the other
    side's factors (and a constant), over that entity's ratings."""
    count = int(codes.max()) + 1
    width = other_factors.shape[1] + 1
    solution = np.zeros((count, width))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(count + 1))
    design = np.column_stack([other_factors[others], np.ones(len(others))])
    ridge = l2 * np.eye(width)
    for entity in range(count):
        rows = order[bounds[entity] : bounds[entity + 1]]
        x = design[rows]
        solution[entity] = np.linalg.solve(x.T @ x + ridge, x.T @ target[rows])
    return solution[:, :-1], solution[:, -1]
