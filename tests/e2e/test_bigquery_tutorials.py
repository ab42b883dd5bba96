"""Google's imported-model tutorials for BigQuery ML, run through `inferline sql` as a user would.

Each tutorial's SQL is pasted as Google's page prints it (the Console tab), with only the
project, bucket and file paths changed (`gs://...` -> local files, `PROJECT_ID` -> myproject);
the models are local stand-ins exported the way each tutorial's Python exports its model:

- "Make predictions with scikit-learn models in ONNX format": a StandardScaler +
  RandomForest pipeline on iris, one `FloatTensorType([None, 1])` input per column, zipmap
  off, queried over `bigquery-public-data.ml_datasets.iris` (a local table of that name);
- "Make predictions with PyTorch models in ONNX format": reshape -> CNN -> softmax -> argmax
  exported with `input_names=['input']`, `output_names=['class_label']` and a fixed batch of
  1, over an object table of images through `ML.RESIZE_IMAGE(ML.DECODE_IMAGE(DATA), 224, 224,
  FALSE)`;
- "Run inference on an object table by using a classification model": a TensorFlow
  SavedModel with the tutorial's signature (`input_1` -> `activation_49`) loaded from its
  folder's files (`model_path = '.../*'`).

The model files and images are built once per module; each test runs in a fresh project.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tests.conftest import CliRunner

Image = pytest.importorskip("PIL.Image")


IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _json_rows(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _query(cli: CliRunner, *statements: str) -> list[dict[str, object]]:
    """One `inferline sql` process runs the statements as a script and prints the last one's rows."""
    script = ";\n".join(statement.rstrip().rstrip(";") for statement in statements)
    return _json_rows(cli("sql", "--db", "w.duckdb", "--format", "json", script).stdout)


def _export_like_the_tutorial(pipe: Pipeline, name: str, columns: list[str], path: Path) -> None:
    """The scikit-learn tutorial's conversion: zipmap off, one [None, 1] float input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(pipe): {"zipmap": False}}
    initial_types = [(column, FloatTensorType([None, 1])) for column in columns]
    model_onnx = convert_sklearn(pipe, name, initial_types=initial_types, options=options)
    path.write_bytes(model_onnx.SerializeToString())


def _bilinear_224(path: Path) -> np.ndarray:
    """What ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 224, 224, FALSE) means: torch's bilinear."""
    import torch

    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
    resized = torch.nn.functional.interpolate(
        pixels.permute(2, 0, 1)[None], size=(224, 224), mode="bilinear", align_corners=False, antialias=False
    )
    return resized.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """A bucket folder of JPEG/PNG images of several sizes -> each one resized as the tutorials do."""
    folder = tmp_path_factory.mktemp("bucket") / "bqml_images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    resized = {}
    for i in range(6):
        # Two JPEGs: the TensorFlow tutorial's query (*.jpg) prints each row's 224x224x3 input_1,
        # ~5 MB of JSON a row to write and parse.
        path = folder / ("goldfish.jpg" if i == 0 else f"fish_{i}.{'jpg' if i == 3 else 'png'}")
        tint = rng.random(3) * 200
        noise = rng.integers(0, 56, (60 + 7 * i, 80 + 3 * i, 3))
        Image.fromarray((noise + tint).astype(np.uint8)).save(path)
        resized[str(path)] = _bilinear_224(path)
    return resized


def _bucket(images: dict[str, np.ndarray]) -> Path:
    return Path(next(iter(images))).parent


@pytest.fixture(scope="module")
def pipeline_rf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pipeline, Path]:
    """The scikit-learn tutorial's pipeline (seeded, 10 trees), saved as pipeline_rf.onnx."""
    data = load_iris()
    x, y = data.data[:, :4], data.target
    ind = np.random.default_rng(0).permutation(x.shape[0])
    pipe = Pipeline(
        [("scaler", StandardScaler()), ("clr", RandomForestClassifier(n_estimators=10, random_state=0))]
    )
    pipe.fit(x[ind], y[ind])
    path = tmp_path_factory.mktemp("models") / "pipeline_rf.onnx"
    _export_like_the_tutorial(pipe, "pipeline_rf", IRIS_COLUMNS, path)
    return pipe, path


def test_scikit_learn_onnx_tutorial(
    cli: CliRunner, project: Path, pipeline_rf: tuple[Pipeline, Path]
) -> None:
    pipe, model_path = pipeline_rf
    data = load_iris()
    x = data.data[:, :4]
    species = np.array(["setosa", "versicolor", "virginica"])[data.target]
    with duckdb.connect(str(project / "w.duckdb")) as con:
        con.execute(
            "CREATE SCHEMA ml_datasets; CREATE TABLE ml_datasets.iris (sepal_length DOUBLE, "
            "sepal_width DOUBLE, petal_length DOUBLE, petal_width DOUBLE, species VARCHAR)"
        )
        con.executemany(
            "INSERT INTO ml_datasets.iris VALUES (?, ?, ?, ?, ?)",
            [[*map(float, r), s] for r, s in zip(x, species, strict=True)],
        )
    setup = (
        " CREATE OR REPLACE MODEL `bqml_tutorial.imported_onnx_model`\n"
        "  OPTIONS (MODEL_TYPE='ONNX',\n"
        f"   MODEL_PATH='{model_path}')",
    )
    rows = _query(
        cli,
        *setup,
        "SELECT *\n"
        "  FROM ML.PREDICT(MODEL `bqml_tutorial.imported_onnx_model`,\n"
        "    (\n"
        "    SELECT * FROM `bigquery-public-data.ml_datasets.iris`\n"
        "    )\n"
        ")",
    )
    # "The outputs include the label and probabilities columns, and the columns from the input table."
    assert list(rows[0])[:2] == ["label", "probabilities"]
    assert set(rows[0]) == {"label", "probabilities", *IRIS_COLUMNS, "species"}
    got = {(r["sepal_length"], r["sepal_width"], r["petal_length"], r["petal_width"]): r for r in rows}
    # What onnxruntime answers for the file (BigQuery runs the file, not the pipeline: its float32
    # thresholds put a few iris points on the other side of a split than scikit-learn's float64).
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(
        ["label", "probabilities"], {n: x[:, [i]].astype(np.float32) for i, n in enumerate(IRIS_COLUMNS)}
    )
    assert np.mean(labels == pipe.predict(x.astype(np.float32))) > 0.97
    for row, label, probs in zip(x, labels, probabilities, strict=True):
        answer = got[tuple(float(v) for v in row)]
        assert answer["label"] == label
        np.testing.assert_allclose(answer["probabilities"], probs, atol=1e-6)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The PyTorch tutorial's final_model around a small CNN (for resnet18), exported as it exports."""
    import torch
    import torch.nn as nn

    class ReshapeLayer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 3, 1, 2)  # [n, h, w, c] (ML.DECODE_IMAGE's layout) -> [n, c, h, w]

    class ArgMaxLayer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.argmax(x, dim=1)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    final_model = nn.Sequential(ReshapeLayer(), model, nn.Softmax(dim=1), ArgMaxLayer()).eval()
    path = tmp_path_factory.mktemp("models") / "resnet18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is legacy
        torch.onnx.export(
            final_model,
            torch.randn(1, 224, 224, 3, device="cpu"),
            str(path),
            opset_version=10,
            input_names=["input"],
            output_names=["class_label"],
            dynamo=False,
        )
    return final_model, path


def test_pytorch_onnx_image_tutorial(
    cli: CliRunner, project: Path, resnet18: tuple[Any, Path], images: dict[str, np.ndarray]
) -> None:
    import torch

    final_model, model_path = resnet18
    setup = (
        "CREATE OR REPLACE MODEL `bqml_tutorial.imported_onnx_model`\n"
        " OPTIONS (MODEL_TYPE='ONNX',\n"
        f"  MODEL_PATH='{model_path}');\n"
        # IMAGE_NAME -> '*': every image of the bucket folder, not only the goldfish.
        "CREATE EXTERNAL TABLE `bqml_tutorial.goldfish_image_table`\n"
        "WITH CONNECTION `us.bqml_tutorial`\n"
        "OPTIONS(\n"
        "object_metadata = 'SIMPLE',\n"
        f"uris = ['{_bucket(images)}/*'],\n"
        "max_staleness = INTERVAL 1 DAY,\n"
        "metadata_cache_mode = 'AUTOMATIC');",
    )
    rows = _query(
        cli,
        *setup,
        "SELECT\n"
        "  class_label\n"
        "FROM\n"
        "  ML.PREDICT(MODEL bqml_tutorial.imported_onnx_model,\n"
        "    (\n"
        "    SELECT\n"
        "      ML.RESIZE_IMAGE(ML.DECODE_IMAGE(DATA),\n"
        "        224,\n"
        "        224,\n"
        "        FALSE) AS input\n"
        "    FROM\n"
        "      bqml_tutorial.goldfish_image_table))",
    )
    with torch.inference_mode():
        expected = [int(final_model(torch.from_numpy(pixels))[0]) for pixels in images.values()]
    assert len(set(expected)) > 1, "the stand-in should tell the images apart"
    # The query selects only class_label (no uri), so the answers are compared as a multiset.
    assert [list(r) for r in rows] == [["class_label"]] * len(images)
    assert sorted(int(r["class_label"]) for r in rows) == sorted(expected)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def resnet_50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel with the tutorial's ResNet 50 signature: input_1 [-1, 224, 224, 3] -> activation_49."""
    pytest.importorskip("tensorflow")
    from tests.tf_models import save_resnet_stand_in

    path = tmp_path_factory.mktemp("bucket") / "resnet_50"
    save_resnet_stand_in(path)
    return path


def test_tensorflow_object_table_tutorial(
    cli: CliRunner, project: Path, resnet_50: Path, images: dict[str, np.ndarray]
) -> None:
    from tests.tf_models import signature_outputs

    # The tutorial's statements as one script (one process, one TensorFlow start).
    setup = (
        "CREATE SCHEMA `myproject.resnet_inference_test`;\n"
        "CREATE EXTERNAL TABLE resnet_inference_test.vision_images\n"
        "WITH CONNECTION `us.lake-connection`\n"
        "OPTIONS(\n"
        "  object_metadata = 'SIMPLE',\n"
        f"  uris = ['{_bucket(images)}/*.jpg']\n"
        ");\n"
        "CREATE MODEL `resnet_inference_test.resnet`\n"
        "OPTIONS(\n"
        "  model_type = 'TENSORFLOW',\n"
        f"  model_path = '{resnet_50}/*');",
    )
    rows = _query(
        cli,
        *setup,
        "SELECT *\n"
        "FROM ML.PREDICT(\n"
        "  MODEL `resnet_inference_test.resnet`,\n"
        "  (SELECT uri, ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 224, 224, FALSE) AS input_1\n"
        "  FROM resnet_inference_test.vision_images)\n"
        ");",
    )
    jpegs = {path: pixels for path, pixels in images.items() if path.endswith(".jpg")}
    by_uri = {Path(str(r["uri"])).name: r for r in rows}
    assert sorted(by_uri) == sorted(Path(p).name for p in jpegs)
    assert {"activation_49", "uri", "input_1"} <= set(rows[0])
    want = signature_outputs(resnet_50, input_1=np.concatenate(list(jpegs.values())))["activation_49"]
    got = np.array([by_uri[Path(path).name]["activation_49"] for path in jpegs])
    assert got.shape == (len(jpegs), 1024)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def virginica(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pipeline, Path]:
    """A binary classifier from the sepals, exported the way the scikit-learn tutorial exports."""
    data = load_iris()
    x, y = data.data[:, :2], (data.target == 2).astype(int)
    pipe = Pipeline([("scaler", StandardScaler()), ("clr", LogisticRegression())]).fit(x, y)
    path = tmp_path_factory.mktemp("models") / "virginica.onnx"
    _export_like_the_tutorial(pipe, "virginica", ["sepal_length", "sepal_width"], path)
    return pipe, path


def test_evaluation_functions_on_a_model_imported_as_the_tutorial_imports_it(
    cli: CliRunner, project: Path, virginica: tuple[Pipeline, Path]
) -> None:
    from sklearn import metrics

    pipe, model_path = virginica
    data = load_iris()
    x, y = data.data[:, :2], (data.target == 2).astype(int)
    with duckdb.connect(str(project / "w.duckdb")) as con:
        con.execute(
            "CREATE SCHEMA mydataset; "
            "CREATE TABLE mydataset.flowers (sepal_length DOUBLE, sepal_width DOUBLE, label BIGINT)"
        )
        con.executemany(
            "INSERT INTO mydataset.flowers VALUES (?, ?, ?)",
            [[*map(float, r), int(t)] for r, t in zip(x, y, strict=True)],
        )
    setup = (
        "CREATE OR REPLACE MODEL `mydataset.virginica` "
        f"OPTIONS (MODEL_TYPE='ONNX', MODEL_PATH='{model_path}')",
    )
    predicted = pipe.predict(x.astype(np.float32))
    score = pipe.predict_proba(x.astype(np.float32))[:, 1]
    (evaluation,) = _query(
        cli,
        *setup,
        "SELECT * FROM ML.EVALUATE(MODEL `mydataset.virginica`, TABLE `myproject.mydataset.flowers`)",
    )
    assert evaluation["precision"] == pytest.approx(metrics.precision_score(y, predicted))
    assert evaluation["recall"] == pytest.approx(metrics.recall_score(y, predicted))
    assert evaluation["f1_score"] == pytest.approx(metrics.f1_score(y, predicted))
    assert evaluation["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, score), abs=1e-6)
    matrix = _query(
        cli,
        "SELECT * FROM ML.CONFUSION_MATRIX(MODEL `mydataset.virginica`, "
        "(SELECT * FROM `myproject.mydataset.flowers`), STRUCT(0.5 AS threshold)) ORDER BY expected_label",
    )
    assert [[r["_0"], r["_1"]] for r in matrix] == metrics.confusion_matrix(y, predicted).tolist()
    curve = _query(
        cli,
        "SELECT * FROM ML.ROC_CURVE(MODEL `mydataset.virginica`, TABLE `myproject.mydataset.flowers`, "
        "GENERATE_ARRAY(0.4, 0.6, 0.01)) ORDER BY threshold",
    )
    assert len(curve) == 21
    for row in curve:
        called = score >= float(row["threshold"])  # type: ignore[arg-type]
        assert row["true_positives"] == int(np.sum(called & (y == 1)))
        assert row["false_positives"] == int(np.sum(called & (y == 0)))
