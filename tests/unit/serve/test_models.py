"""The row shape a served model declares (v2 metadata `[-1, *row]`), from what the model says."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.models.base import LoadedModel, Prediction
from inferline.serve.models import feature_shape


class Handler:
    batch_size = None

    def __init__(self, framework: str) -> None:
        self.framework = framework

    def load(self, uri: str) -> Any:
        raise NotImplementedError

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        raise NotImplementedError


class BuiltKerasModel:
    input_shape = (None, 28, 28, 1)


def test_a_built_keras_model_gives_its_input_shape() -> None:
    keras = LoadedModel("m", "1", "mem://m", Handler("keras"), BuiltKerasModel())
    assert feature_shape(keras) == (28, 28, 1)
    other = LoadedModel("m", "1", "mem://m", Handler("torch"), BuiltKerasModel())
    assert feature_shape(other) is None  # only Keras means this by input_shape
    meta = {"input_shape": [4]}
    named = LoadedModel("m", "1", "mem://m", Handler("keras"), BuiltKerasModel(), metadata=meta)
    assert feature_shape(named) == (4,)  # store metadata wins
