"""dnn_classifier and dnn_regressor with scikit-learn's MLP.

hidden_units -> hidden_layer_sizes, activation_fn (RELU, SIGMOID, TANH, LINEAR), batch_size,
learn_rate -> learning_rate_init (BigQuery's default 0.001), max_iterations -> epochs (default
20), l2_reg -> alpha, optimizer ADAM|SGD, early_stop on 10% of the training rows. The MLP has no
dropout: dropout must be 0. Class weights become sample weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.sql.training.options import ACTIVATIONS, TrainOptions

DEFAULT_EPOCHS = 20


def estimator(options: TrainOptions, rows: int) -> Any:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    model = MLPClassifier if options.classifier else MLPRegressor
    return model(
        hidden_layer_sizes=tuple(options.get("hidden_units", [128])),
        activation=ACTIVATIONS[options.get("activation_fn", "RELU")],
        solver=str(options.get("optimizer", "ADAM")).lower(),
        batch_size=min(int(options.get("batch_size", 1024)), max(rows, 1)),
        learning_rate_init=float(options.get("learn_rate", 0.001)),
        max_iter=int(options.get("max_iterations", DEFAULT_EPOCHS)),
        alpha=float(options.get("l2_reg", 0.0)),
        early_stopping=bool(options.get("early_stop", False)),
        random_state=0,
    )


def fit(model: Any, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Any:
    return model.fit(x, y, sample_weight=weights)
