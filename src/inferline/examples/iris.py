"""The iris example: an SVC trained on sklearn's bundled iris data, as .joblib and .onnx.

Nothing is downloaded: the data ships inside scikit-learn.
"""

from __future__ import annotations

import csv
import os
import warnings
from importlib import resources
from typing import Any

from inferline.errors import require

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def pipeline_yaml() -> str:
    """The example's pipeline spec, as shipped in the package."""
    return resources.files("inferline.examples").joinpath("iris.yaml").read_text(encoding="utf-8")


def build(root: str = "examples/iris", *, force: bool = False) -> dict[str, str]:
    """Write data/iris.csv, models/iris-1.joblib, models/iris-1.onnx and pipeline.yaml.

    Returns the paths written (or already present). Rebuilds only what is missing.
    """
    datasets: Any = require("sklearn.datasets", "sklearn")
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    paths = {
        "data": os.path.join(root, "data", "iris.csv"),
        "joblib": os.path.join(root, "models", "iris-1.joblib"),
        "onnx": os.path.join(root, "models", "iris-1.onnx"),
        "pipeline": os.path.join(root, "pipeline.yaml"),
    }
    iris = datasets.load_iris()
    if force or not os.path.exists(paths["data"]):
        with open(paths["data"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *FEATURES, "target"])
            for i, (row, target) in enumerate(zip(iris.data, iris.target, strict=True)):
                writer.writerow([i, *(f"{v:.1f}" for v in row), int(target)])
    if force or not (os.path.exists(paths["joblib"]) and os.path.exists(paths["onnx"])):
        model = train(iris.data, iris.target)
        save_joblib(model, paths["joblib"])
        save_onnx(model, paths["onnx"], n_features=len(FEATURES))
    if force or not os.path.exists(paths["pipeline"]):
        with open(paths["pipeline"], "w", encoding="utf-8") as handle:
            handle.write(pipeline_yaml())
    return paths


def train(features: Any, target: Any) -> Any:
    svm: Any = require("sklearn.svm", "sklearn")
    return svm.SVC(kernel="rbf", gamma="scale", C=1.0).fit(features, target)


def save_joblib(model: Any, path: str) -> None:
    joblib: Any = require("joblib", "sklearn")
    tmp = path + ".tmp"
    joblib.dump(model, tmp)
    os.replace(tmp, path)


def save_onnx(model: Any, path: str, *, n_features: int) -> None:
    skl2onnx: Any = require("skl2onnx", "onnx")
    types: Any = require("skl2onnx.common.data_types", "onnx")
    with warnings.catch_warnings():
        # skl2onnx reads SVC attributes that scikit-learn 1.9 marks deprecated.
        warnings.simplefilter("ignore", FutureWarning)
        onx = skl2onnx.convert_sklearn(
            model,
            initial_types=[("input", types.FloatTensorType([None, n_features]))],
            options={id(model): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(onx.SerializeToString())
    os.replace(tmp, path)
