"""sql/training/data.py: BigQuery's data splits, feature kinds, class weights."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from inferline.errors import SqlError
from inferline.sql.training import data
from inferline.sql.training.options import TrainOptions

WHERE = "CREATE MODEL ds.m"


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
    options = TrainOptions(model_type="linear_reg", label="y", split=method, eval_fraction=fraction)
    mask = data.split_rows(rows, options)
    assert int(mask.sum()) == held_out
    np.testing.assert_array_equal(mask, data.split_rows(rows, options))  # seeded: repeatable


def test_custom_split_holds_out_true_rows() -> None:
    table = pa.table({"is_eval": [True, False, None, True], "y": [1.0, 2.0, 3.0, 4.0]})
    options = TrainOptions("linear_reg", "y", split="CUSTOM", split_column="is_eval")
    assert data.split_rows(table, options, WHERE).tolist() == [True, False, False, True]
    wrong = TrainOptions("linear_reg", "y", split="CUSTOM", split_column="y")
    with pytest.raises(SqlError, match=r"data_split_col 'y' must be BOOL for data_split_method='CUSTOM'"):
        data.split_rows(table, wrong, WHERE)


def test_seq_split_holds_out_the_last_rows_in_order() -> None:
    table = pa.table({"day": [5, 1, None, 4, 2, 3, 9, 8, 7, 6]})
    options = TrainOptions("linear_reg", "y", split="SEQ", eval_fraction=0.3, split_column="day")
    held = data.split_rows(table, options, WHERE)
    assert sorted(np.asarray(table.column("day"))[held].tolist()) == [7, 8, 9]


def test_feature_kinds_leave_out_label_and_split_column() -> None:
    table = pa.table({"x": [1.0], "c": ["a"], "is_eval": [True], "y": [1.0]})
    options = TrainOptions("linear_reg", "y", split="CUSTOM", split_column="is_eval")
    assert data.feature_kinds(table, options, WHERE) == (["x", "c"], ["c"])
    table = pa.table({"d": pa.array([[1.0]]), "label": [0.0]})
    with pytest.raises(SqlError, match=r"feature column 'd' is list<item: double>; training takes numbers"):
        data.feature_kinds(table, TrainOptions("linear_reg", "label"), WHERE)


def test_class_weights_balanced_and_given() -> None:
    y = np.array(["a", "a", "a", "b"], dtype=object)
    balanced = TrainOptions("logistic_reg", "y", values={"auto_class_weights": True})
    np.testing.assert_allclose(data.class_weights(y, balanced, WHERE), [2 / 3, 2 / 3, 2 / 3, 2.0])
    given = TrainOptions("logistic_reg", "y", values={"class_weights": {"b": 3.0}})
    np.testing.assert_allclose(data.class_weights(y, given, WHERE), [1.0, 1.0, 1.0, 3.0])
    unknown = TrainOptions("logistic_reg", "y", values={"class_weights": {"c": 3.0}})
    with pytest.raises(SqlError, match=r"class_weights names label\(s\) c not in the training rows"):
        data.class_weights(y, unknown, WHERE)
