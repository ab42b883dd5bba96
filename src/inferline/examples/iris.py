"""The iris example: an SVC trained on sklearn's bundled iris data, as .joblib and .onnx.

Nothing is downloaded: the data ships inside scikit-learn.
"""

from __future__ import annotations

import csv
import os
import warnings
from importlib import resources
from typing import TYPE_CHECKING, Any

from inferline.errors import require
from inferline.examples.quickstart import numeric_key_order, relocate, run_example

if TYPE_CHECKING:
    from rich.console import Console

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def pipeline_yaml(root: str = "examples/iris") -> str:
    """The example's pipeline spec, as shipped in the package, reading from `root`."""
    text = resources.files("inferline.examples").joinpath("iris.yaml").read_text(encoding="utf-8")
    return relocate(text, "examples/iris", root)


def build(
    root: str = "examples/iris", *, force: bool = False, pipeline_root: str = "examples/iris"
) -> dict[str, str]:
    """Write data/iris.csv, models/iris-1.joblib, models/iris-1.onnx (an SVC, which gives no
    probabilities), models/iris_proba-1.joblib (a logistic regression, which does: for `top_k`
    and hooks that rank classes) and pipeline.yaml.

    pipeline.yaml names its files under `pipeline_root`, as seen from where inferline runs
    (`inferline quickstart --root DIR` passes DIR/iris). Returns the paths written (or already
    present). Rebuilds only what is missing.
    """
    datasets: Any = require("sklearn.datasets", "sklearn")
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    paths = {
        "data": os.path.join(root, "data", "iris.csv"),
        "joblib": os.path.join(root, "models", "iris-1.joblib"),
        "onnx": os.path.join(root, "models", "iris-1.onnx"),
        "proba": os.path.join(root, "models", "iris_proba-1.joblib"),
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
    if force or not os.path.exists(paths["proba"]):
        save_joblib(train_with_probabilities(iris.data, iris.target), paths["proba"])
    if force or not os.path.exists(paths["pipeline"]):
        with open(paths["pipeline"], "w", encoding="utf-8") as handle:
            handle.write(pipeline_yaml(pipeline_root))
    return paths


def quickstart(root: str, out: Console) -> None:
    """Build the example under `root`/iris, run its pipeline and show the first rows."""
    import duckdb

    paths = build(os.path.join(root, "iris"), pipeline_root=os.path.join(root, "iris"))
    out.print(
        f"example ready: data {paths['data']}, models {paths['joblib']} and {paths['onnx']} "
        f"(an SVC), {paths['proba']} (with probabilities)"
    )
    spec = run_example(paths["pipeline"], out)
    if spec.sink.path is None or spec.sink.table is None:
        return
    with duckdb.connect(spec.sink.path, read_only=True) as con:
        query = (
            f"SELECT key, sepal_length, petal_length, target, prediction, model_id "
            f"FROM {spec.sink.table} {numeric_key_order()} LIMIT 5"
        )
        out.print(str(con.sql(query)))
    out.print("look at all of them with:")
    out.print(
        f"  python -c \"import duckdb; duckdb.connect('{spec.sink.path}')"
        f".sql('SELECT prediction, count(*) FROM {spec.sink.table} GROUP BY 1').show()\""
    )


def train(features: Any, target: Any) -> Any:
    svm: Any = require("sklearn.svm", "sklearn")
    return svm.SVC(kernel="rbf", gamma="scale", C=1.0).fit(features, target)


def train_with_probabilities(features: Any, target: Any) -> Any:
    linear: Any = require("sklearn.linear_model", "sklearn")
    return linear.LogisticRegression(max_iter=1000).fit(features, target)


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
