"""linear_reg and logistic_reg with scikit-learn.

Without learn_rate, BigQuery's NORMAL_EQUATION-like fit: LinearRegression, Ridge (l2_reg as
alpha), Lasso (l1_reg) or ElasticNet (both); LogisticRegression with C = 1 / l2_reg (an L1 part
through l1_ratio and the saga solver). With learn_rate, gradient descent at that constant rate
(SGDRegressor/SGDClassifier, max_iterations epochs; BigQuery's default 20).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.sql.training.options import TrainOptions

DEFAULT_EPOCHS = 20  # BigQuery's max_iterations default for gradient descent


def estimator(options: TrainOptions) -> Any:
    from sklearn import linear_model as lm

    l1, l2 = float(options.get("l1_reg", 0.0)), float(options.get("l2_reg", 0.0))
    rate = options.get("learn_rate")
    if rate is not None:
        penalty = "elasticnet" if l1 and l2 else "l1" if l1 else "l2" if l2 else None
        common = {
            "learning_rate": "constant",
            "eta0": rate,
            "max_iter": options.get("max_iterations", DEFAULT_EPOCHS),
            "penalty": penalty,
            "alpha": (l1 + l2) or 0.0001,
            "l1_ratio": l1 / (l1 + l2) if l1 + l2 else 0.15,
            "random_state": 0,
            "tol": None,
        }
        if options.classifier:
            return lm.SGDClassifier(loss="log_loss", **common)
        return lm.SGDRegressor(**common)
    if options.classifier:
        return lm.LogisticRegression(
            C=1.0 / (l1 + l2) if l1 + l2 else np.inf,
            l1_ratio=l1 / (l1 + l2) if l1 + l2 else 0.0,
            solver="saga" if l1 else "lbfgs",
            max_iter=options.get("max_iterations", 100),
        )
    if l1 and l2:
        return lm.ElasticNet(alpha=l1 + l2, l1_ratio=l1 / (l1 + l2))
    if l1:
        return lm.Lasso(alpha=l1)
    return lm.Ridge(alpha=l2) if l2 else lm.LinearRegression()


def fit(model: Any, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Any:
    # LinearRegression/Ridge/Lasso/ElasticNet/LogisticRegression/SGD* all take sample_weight.
    return model.fit(x, y, sample_weight=weights)


def learning_rate(options: TrainOptions) -> float:
    return float(options.get("learn_rate", 0.0))
