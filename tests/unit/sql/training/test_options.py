"""sql/training/options.py: OPTIONS checked per model type, every unsupported one named."""

from __future__ import annotations

from typing import Any

import pytest

from inferline.errors import SqlError
from inferline.sql.training import parse_options

WHERE = "CREATE MODEL ds.m"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"num_clusters": 3.0},
            r"option 'num_clusters' is not supported for model_type='logistic_reg' \(supported: model_type",
        ),
        (
            {"dropout": 0.0, "num_clusters": 3.0},
            r"options 'dropout', 'num_clusters' are not supported for model_type='logistic_reg'",
        ),
        ({"input_label_cols": ["a", "b"]}, r"input_label_cols must name one column"),
        ({"data_split_method": "sideways"}, r"data_split_method='SIDEWAYS' is not supported"),
        ({"data_split_method": "seq"}, r"data_split_method='SEQ' needs data_split_col='column'"),
        ({"data_split_col": "c"}, r"data_split_col applies to data_split_method='CUSTOM' or 'SEQ'"),
        ({"data_split_eval_fraction": 1.5}, r"data_split_eval_fraction must be a number between 0 and 1"),
        ({"l2_reg": -1.0}, r"l2_reg must be a number >= 0, got -1.0"),
        ({"max_iterations": 0.0}, r"max_iterations must be a whole number >= 1"),
        ({"learn_rate": 0.0}, r"learn_rate must be a number > 0, got 0.0"),
        ({"class_weights": [["a", -1.0]]}, r"class_weights must be \[STRUCT\('label', weight\), ...\]"),
        (
            {"auto_class_weights": True, "class_weights": [["a", 1.0]]},
            r"give auto_class_weights or class_weights, not both",
        ),
    ],
)
def test_parse_options_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SqlError, match=f"^{WHERE}: {message}"):
        parse_options({"model_type": "logistic_reg", **options}, WHERE)


@pytest.mark.parametrize(
    ("model_type", "options", "message"),
    [
        ("linear_reg", {"auto_class_weights": True}, r"option 'auto_class_weights' is not supported"),
        (
            "kmeans",
            {"input_label_cols": ["y"]},
            r"option 'input_label_cols' is not supported for model_type='kmeans'",
        ),
        ("kmeans", {"distance_type": "manhattan"}, r"distance_type must be 'EUCLIDEAN' or 'COSINE'"),
        (  # BigQuery's kmeans and pca train on every row
            "pca",
            {"data_split_method": "RANDOM"},
            r"option 'data_split_method' is not supported for model_type='pca' \(supported: model_type, num_",
        ),
        ("dnn_classifier", {"dropout": 0.2}, r"dropout must be 0 \(scikit-learn's MLP has no dropout\)"),
        ("dnn_classifier", {"activation_fn": "crelu"}, r"activation_fn must be one of RELU, SIGMOID, TANH"),
        ("boosted_tree_regressor", {"subsample": 1.5}, r"subsample must be a number in \(0, 1\]"),
        ("random_forest_regressor", {"learn_rate": 0.1}, r"option 'learn_rate' is not supported"),
    ],
)
def test_options_belong_to_their_model_type(model_type: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(SqlError, match=f"^{WHERE}: {message}"):
        parse_options({"model_type": model_type, **options}, WHERE)


def test_values_are_converted() -> None:
    options = parse_options(
        {
            "model_type": "DNN_CLASSIFIER",
            "hidden_units": [32.0, 16.0],
            "activation_fn": "tanh",
            "class_weights": [["yes", 2.0], ["no", 0.5]],
            "data_split_method": "custom",
            "data_split_col": "is_eval",
        },
        WHERE,
    )
    assert options.model_type == "dnn_classifier" and options.classifier and options.label == "label"
    assert options.get("hidden_units") == [32, 16]
    assert options.get("activation_fn") == "TANH"
    assert options.get("class_weights") == {"yes": 2.0, "no": 0.5}
    assert (options.split, options.split_column) == ("CUSTOM", "is_eval")
    assert parse_options({"model_type": "pca"}, WHERE).label is None
    assert parse_options({"model_type": "kmeans"}, WHERE).split == "NO_SPLIT"
