"""ONNX models as people export them: one input per column (skl2onnx), fixed batch 1 (torch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_frame() -> pd.DataFrame:
    """Iris with a string column `garden` that the model also uses (a one-hot input)."""
    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=FEATURES)
    frame["garden"] = np.where(np.arange(len(frame)) % 3 == 0, "kew", "eden")
    frame["species"] = iris.target
    return frame


def per_column_pipeline(path: Path, *, with_text: bool) -> Pipeline:
    """A scaler (+ one-hot of `garden`) + logistic regression, exported one input per column
    (`FloatTensorType([None, 1])` each, `StringTensorType([None, 1])` for text)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    frame = iris_frame()
    columns = [*FEATURES, "garden"] if with_text else FEATURES
    steps = [("numbers", StandardScaler(), FEATURES)]
    if with_text:
        steps.append(("text", OneHotEncoder(), ["garden"]))
    model = Pipeline([("prep", ColumnTransformer(steps)), ("clf", LogisticRegression(max_iter=500))])
    model.fit(frame[columns], frame["species"])
    types = [(c, FloatTensorType([None, 1])) for c in FEATURES]
    if with_text:
        types.append(("garden", StringTensorType([None, 1])))
    onnx = convert_sklearn(model, initial_types=types, options={id(model): {"zipmap": False}})
    path.write_bytes(onnx.SerializeToString())
    return model


def fixed_batch_export(path: Path, batch: int = 1) -> object:
    """A torch Linear(4, 3) exported with a fixed batch (the legacy exporter keeps it fixed)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(batch, 4),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
        )
    return model


def two_output_graph(path: Path) -> None:
    """x (n, 3) -> total (n,) = sum of x, doubled (n, 3) = 2 x: a regression and a vector."""
    import onnx

    helper = onnx.helper
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
            helper.make_node("Mul", ["x", "two"], ["doubled"]),
        ],
        "two_outputs",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor_value_info("total", onnx.TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("doubled", onnx.TensorProto.FLOAT, [None, 3]),
        ],
        [
            helper.make_tensor("axes", onnx.TensorProto.INT64, [1], [1]),
            helper.make_tensor("two", onnx.TensorProto.FLOAT, [], [2.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
