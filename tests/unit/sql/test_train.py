"""sql/train.py: OPTIONS checking, BigQuery's data splits and the fitted Pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from inferline.errors import SqlError
from inferline.sql import train

WHERE = "CREATE MODEL ds.m"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"num_clusters": 3.0},
            r"option 'num_clusters' is not supported for training \(supported: model_type",
        ),
        ({"input_label_cols": ["a", "b"]}, r"input_label_cols must name one column"),
        ({"data_split_method": "seq"}, r"data_split_method='SEQ' is not supported"),
        ({"data_split_eval_fraction": 1.5}, r"data_split_eval_fraction must be a number between 0 and 1"),
        ({"l2_reg": -1.0}, r"l2_reg must be a number >= 0, got -1.0"),
        ({"max_iterations": 0.0}, r"max_iterations must be a whole number >= 1"),
    ],
)
def test_parse_options_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SqlError, match=f"^{WHERE}: {message}"):
        train.parse_options({"model_type": "logistic_reg", **options}, WHERE)


def test_auto_class_weights_is_for_classifiers() -> None:
    with pytest.raises(SqlError, match=r"auto_class_weights applies to logistic_reg only"):
        train.parse_options({"model_type": "linear_reg", "auto_class_weights": True}, WHERE)


@pytest.mark.parametrize(
    ("method", "fraction", "rows", "held_out"),
    [
        ("AUTO_SPLIT", None, 499, 0),
        ("AUTO_SPLIT", None, 1000, 200),
        ("AUTO_SPLIT", None, 60_000, 10_000),
        ("RANDOM", None, 100, 20),
        ("RANDOM", 0.3, 100, 30),
        ("NO_SPLIT", None, 100_000, 0),
    ],
)
def test_split_rows_follows_bigquery(method: str, fraction: float | None, rows: int, held_out: int) -> None:
    options = train.TrainOptions(model_type="linear_reg", label="y", split=method, eval_fraction=fraction)
    mask = train.split_rows(rows, options)
    assert int(mask.sum()) == held_out
    np.testing.assert_array_equal(mask, train.split_rows(rows, options))  # seeded: repeatable


def test_fit_imputes_scales_and_one_hot_encodes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    colour = np.where(np.arange(60) % 2 == 0, "red", "blue")
    y = 3 * x + np.where(colour == "red", 10.0, 0.0)
    table = pa.table({"x": pa.array([None, *x[1:]], pa.float64()), "colour": colour.tolist(), "y": y})
    options = train.parse_options({"model_type": "linear_reg", "input_label_cols": ["y"]}, WHERE)
    pipeline, features, summary, held_out = train.fit(table, options, WHERE)
    assert features == ["x", "colour"]
    assert pipeline.text_inputs_ == ["colour"]
    assert held_out.num_rows == 60  # nothing held out: ML.EVALUATE without input uses the training rows
    assert summary == {"training_rows": 60, "evaluation_rows": 0, "converged": True}
    matrix = np.array([[1.0, "red"], [1.0, "blue"]], dtype=object)
    np.testing.assert_allclose(pipeline.predict(matrix), [13.0, 3.0], atol=0.3)


def test_fit_rejects_unsupported_feature_types() -> None:
    table = pa.table({"d": pa.array([[1.0]] * 4), "label": [0.0, 1.0, 0.0, 1.0]})
    options = train.parse_options({"model_type": "linear_reg"}, WHERE)
    with pytest.raises(SqlError, match=r"feature column 'd' is list<item: double>; training takes numbers"):
        train.fit(table, options, WHERE)
