"""models/transformed.py: a stored TRANSFORM applied to raw batches, and its one-line errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferline.errors import ModelError
from inferline.models.base import Prediction
from inferline.models.transformed import Transform, with_transform

WHERE = "model ds.m/1"
SPEC: dict[str, Any] = {
    "inputs": [["x", "DOUBLE"], ["colour", "VARCHAR"]],
    "outputs": [["x_scaled", "(__ml_standard_scaler(x, 2.0, 4.0))"], ["colour", "colour"]],
    "macros": ["CREATE OR REPLACE TEMP MACRO __ml_standard_scaler(x, mean, stddev) AS (x - mean) / stddev"],
}


class Echo:
    """A handler that returns the matrix it was given (counts calls)."""

    framework = "sklearn"
    batch_size = None

    def __init__(self) -> None:
        self.calls = 0

    def load(self, uri: str) -> Any:
        return type("Trained", (), {"text_inputs_": ["colour"]})()

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        self.calls += 1
        return Prediction(prediction=inputs)


def test_raw_rows_become_the_features_with_nulls_kept() -> None:
    inner = Echo()
    handler = with_transform(inner, SPEC, features=["x_scaled", "colour"], where=WHERE)
    model = handler.load("m.skops")
    rows = np.array([[6.0, "red"], [np.nan, None]], dtype=object)
    got = handler.predict(model, rows).prediction
    assert inner.calls == 1 and handler.text_inputs(model) == ["colour"]
    assert got[0].tolist() == [1.0, "red"]
    assert np.isnan(got[1][0]) and got[1][1] is None  # NULL in, NULL out: the model imputes


@pytest.mark.parametrize(
    ("spec", "features", "message"),
    [
        ({"outputs": []}, ["x"], r"model ds.m/1: metadata 'transform' must hold inputs \[\[column, type\]\]"),
        ({**SPEC, "macros": ["COPY t TO 'x.csv'"]}, ["x_scaled"], r"holds a statement that is not a macro"),
        (SPEC, ["x_scaled", "size"], r"model ds.m/1: metadata 'transform' gives no feature size"),
    ],
)
def test_a_bad_stored_transform_fails_naming_the_model(spec: Any, features: list[str], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        Transform.parse(spec, features=features, where=WHERE)


def test_batch_errors_name_the_model_and_the_columns() -> None:
    handler = with_transform(Echo(), SPEC, features=["x_scaled", "colour"], where=WHERE)
    with pytest.raises(ModelError, match=r"expected rows of 2 values \(x, colour\), the TRANSFORM's input"):
        handler.predict(None, np.zeros((2, 3)))
    broken = {**SPEC, "outputs": [["h", "__inferline_hash_bucketize(colour, 3)"]]}
    failing = with_transform(Echo(), broken, features=["h"], where=WHERE)
    with pytest.raises(ModelError, match=r"^model ds.m/1: its TRANSFORM fails on this batch: "):
        failing.predict(None, np.array([[1.0, "red"]], dtype=object))
