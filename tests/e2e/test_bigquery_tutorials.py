"""Google's imported-model tutorials for BigQuery ML, run through `inferline sql` as a user would.

Each test makes a local stand-in for the tutorial's model and data, then runs the tutorial's
statements with only the paths changed (bucket paths -> local files), in a real process:

- "Make predictions with scikit-learn models in ONNX format": a StandardScaler +
  RandomForest pipeline on iris, exported with one ONNX input per column, queried over
  `bigquery-public-data.ml_datasets.iris` (a local table of that name);
- "Make predictions with PyTorch models in ONNX format": an image model taking
  `[n, 224, 224, 3]` exported with torch.onnx, over an object table of images with
  `ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 224, 224, FALSE)`;
- the image object-table tutorial with a TensorFlow SavedModel named by its files
  (`model_path='.../resnet_50/*'`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tests.conftest import CliRunner

Image = pytest.importorskip("PIL.Image")


def _json_rows(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_scikit_learn_onnx_tutorial(cli: CliRunner, project: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    data = load_iris()
    x, y = data.data[:, :4], data.target
    pipe = Pipeline(
        [("scaler", StandardScaler()), ("clr", RandomForestClassifier(n_estimators=10, random_state=0))]
    )
    pipe.fit(x, y)
    # As the tutorial: zipmap off, one named [None, 1] input per feature.
    options = {id(pipe): {"zipmap": False}}
    initial_types = [
        ("sepal_length", FloatTensorType([None, 1])),
        ("sepal_width", FloatTensorType([None, 1])),
        ("petal_length", FloatTensorType([None, 1])),
        ("petal_width", FloatTensorType([None, 1])),
    ]
    onx = convert_sklearn(pipe, "pipeline_rf", initial_types=initial_types, options=options)
    (project / "pipeline_rf.onnx").write_bytes(onx.SerializeToString())
    species = np.array(["setosa", "versicolor", "virginica"])[y]
    with duckdb.connect(str(project / "w.duckdb")) as con:
        con.execute(
            "CREATE SCHEMA ml_datasets; CREATE TABLE ml_datasets.iris (sepal_length DOUBLE, "
            "sepal_width DOUBLE, petal_length DOUBLE, petal_width DOUBLE, species VARCHAR)"
        )
        con.executemany(
            "INSERT INTO ml_datasets.iris VALUES (?, ?, ?, ?, ?)",
            [[*map(float, r), s] for r, s in zip(x, species, strict=True)],
        )
    cli(
        "sql",
        "--db",
        "w.duckdb",
        "CREATE OR REPLACE MODEL `bqml_tutorial.imported_onnx_model`\n"
        " OPTIONS (MODEL_TYPE='ONNX',\n"
        "   MODEL_PATH='pipeline_rf.onnx')",
    )
    result = cli(
        "sql",
        "--db",
        "w.duckdb",
        "--format",
        "json",
        "SELECT\n  *\nFROM\n  ML.PREDICT(MODEL `bqml_tutorial.imported_onnx_model`,\n    (\n    SELECT\n"
        "      * FROM `bigquery-public-data.ml_datasets.iris`\n    )\n  )",
    )
    rows = _json_rows(result.stdout)
    assert list(rows[0])[:2] == ["label", "probabilities"]
    got = {(r["sepal_length"], r["sepal_width"], r["petal_length"], r["petal_width"]): r for r in rows}
    features = x.astype(np.float32)
    expected_labels = pipe.predict(features)
    expected_probabilities = pipe.predict_proba(features)
    for row, label, probabilities in zip(x, expected_labels, expected_probabilities, strict=True):
        answer = got[tuple(float(v) for v in row)]
        assert answer["label"] == label
        np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-5)  # type: ignore[arg-type]


def _draw_images(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(5):
        path = folder / f"goldfish_{i}.jpg" if i == 0 else folder / f"fish_{i}.png"
        Image.fromarray(rng.integers(0, 256, (60 + 7 * i, 80, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_pytorch_onnx_image_tutorial(cli: CliRunner, project: Path) -> None:
    import torch

    class Classifier(torch.nn.Module):
        """Takes ML.DECODE_IMAGE's layout, [n, height, width, channels], as the tutorial's wrapper."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
            self.head = torch.nn.Linear(4, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            features = torch.relu(self.conv(image.permute(0, 3, 1, 2))).mean(dim=(2, 3))
            return torch.softmax(self.head(features), dim=1)

    torch.manual_seed(0)
    model = Classifier().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter warns that it is legacy
        torch.onnx.export(
            model,
            torch.randn(1, 224, 224, 3),
            str(project / "resnet18.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
    paths = _draw_images(project / "images")
    cli(
        "sql",
        "--db",
        "w.duckdb",
        "CREATE EXTERNAL TABLE `bqml_tutorial.goldfish_image_table`\n"
        "WITH CONNECTION `us.bqml_tutorial`\n"
        "OPTIONS(\n"
        "object_metadata = 'SIMPLE',\n"
        "uris = ['images/*'],\n"
        "max_staleness = INTERVAL 1 DAY,\n"
        "metadata_cache_mode = 'AUTOMATIC');\n"
        "CREATE OR REPLACE MODEL `bqml_tutorial.imported_onnx_model`\n"
        "  OPTIONS (MODEL_TYPE='ONNX',\n"
        "    MODEL_PATH='resnet18.onnx')",
    )
    result = cli(
        "sql",
        "--db",
        "w.duckdb",
        "--format",
        "json",
        "SELECT\n  uri, output\nFROM\n  ML.PREDICT(MODEL bqml_tutorial.imported_onnx_model,\n"
        "    (\n    SELECT\n      uri, ML.RESIZE_IMAGE(ML.DECODE_IMAGE(DATA),\n"
        "        224,\n        224,\n        FALSE) AS input\n"
        "    FROM\n      bqml_tutorial.goldfish_image_table))",
    )
    rows = {Path(str(r["uri"])).name: r["output"] for r in _json_rows(result.stdout)}
    assert sorted(rows) == sorted(p.name for p in paths)
    for path in paths:
        pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
        resized = torch.nn.functional.interpolate(
            pixels.permute(2, 0, 1)[None],
            size=(224, 224),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        ).permute(0, 2, 3, 1)
        with torch.inference_mode():
            expected = model(resized)[0].numpy()
        np.testing.assert_allclose(rows[path.name], expected, atol=1e-5)  # type: ignore[arg-type]


def test_tensorflow_object_table_tutorial(cli: CliRunner, project: Path) -> None:
    pytest.importorskip("tensorflow")
    from tests.tf_models import save_image_classifier, signature_outputs

    save_image_classifier(project / "resnet_50")
    paths = _draw_images(project / "images")
    cli(
        "sql",
        "--db",
        "w.duckdb",
        "CREATE EXTERNAL TABLE `bqml_tutorial.resnet_50_object_table`\n"
        "WITH CONNECTION `us.bqml_tutorial`\n"
        "OPTIONS(object_metadata = 'SIMPLE', uris = ['images/*'], max_staleness = INTERVAL 1 DAY, "
        "metadata_cache_mode = 'AUTOMATIC');\n"
        "CREATE MODEL `bqml_tutorial.resnet50`\n"
        "OPTIONS(\n  model_type = 'TENSORFLOW',\n  model_path = 'resnet_50/*');",
    )
    result = cli(
        "sql",
        "--db",
        "w.duckdb",
        "--format",
        "json",
        "SELECT *\nFROM ML.PREDICT(\n  MODEL `bqml_tutorial.resnet50`,\n"
        "  (SELECT uri, ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 224, 224, FALSE) AS input\n"
        "  FROM bqml_tutorial.resnet_50_object_table)\n)",
    )
    rows = {Path(str(r["uri"])).name: r for r in _json_rows(result.stdout)}
    assert sorted(rows) == sorted(p.name for p in paths)
    import torch

    for path in paths:
        pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
        resized = torch.nn.functional.interpolate(
            pixels.permute(2, 0, 1)[None],
            size=(224, 224),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        ).permute(0, 2, 3, 1)
        want = signature_outputs(project / "resnet_50", image=resized.numpy())["probabilities"][0]
        np.testing.assert_allclose(rows[path.name]["probabilities"], want, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]


def test_evaluation_functions_on_a_model_imported_as_the_tutorial_imports_it(
    cli: CliRunner, project: Path
) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn import metrics
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x, y = data.data[:, :2], (data.target == 2).astype(int)  # virginica or not, from the sepals
    pipe = Pipeline([("scaler", StandardScaler()), ("clr", LogisticRegression())]).fit(x, y)
    initial_types = [
        ("sepal_length", FloatTensorType([None, 1])),
        ("sepal_width", FloatTensorType([None, 1])),
    ]
    onx = convert_sklearn(
        pipe, "virginica", initial_types=initial_types, options={id(pipe): {"zipmap": False}}
    )
    (project / "virginica.onnx").write_bytes(onx.SerializeToString())
    with duckdb.connect(str(project / "w.duckdb")) as con:
        con.execute(
            "CREATE SCHEMA mydataset; "
            "CREATE TABLE mydataset.flowers (sepal_length DOUBLE, sepal_width DOUBLE, label BIGINT)"
        )
        con.executemany(
            "INSERT INTO mydataset.flowers VALUES (?, ?, ?)",
            [[*map(float, r), int(t)] for r, t in zip(x, y, strict=True)],
        )
    cli(
        "sql",
        "--db",
        "w.duckdb",
        "CREATE OR REPLACE MODEL `mydataset.virginica` "
        "OPTIONS (MODEL_TYPE='ONNX', MODEL_PATH='virginica.onnx')",
    )
    predicted = pipe.predict(x.astype(np.float32))
    score = pipe.predict_proba(x.astype(np.float32))[:, 1]

    def query(sql: str) -> list[dict[str, object]]:
        return _json_rows(cli("sql", "--db", "w.duckdb", "--format", "json", sql).stdout)

    (evaluation,) = query(
        "SELECT * FROM ML.EVALUATE(MODEL `mydataset.virginica`, TABLE `myproject.mydataset.flowers`)"
    )
    assert evaluation["precision"] == pytest.approx(metrics.precision_score(y, predicted))
    assert evaluation["recall"] == pytest.approx(metrics.recall_score(y, predicted))
    assert evaluation["f1_score"] == pytest.approx(metrics.f1_score(y, predicted))
    assert evaluation["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, score), abs=1e-6)
    matrix = query(
        "SELECT * FROM ML.CONFUSION_MATRIX(MODEL `mydataset.virginica`, "
        "(SELECT * FROM `myproject.mydataset.flowers`), STRUCT(0.5 AS threshold)) ORDER BY expected_label"
    )
    assert [[r["_0"], r["_1"]] for r in matrix] == metrics.confusion_matrix(y, predicted).tolist()
    curve = query(
        "SELECT * FROM ML.ROC_CURVE(MODEL `mydataset.virginica`, TABLE `myproject.mydataset.flowers`, "
        "GENERATE_ARRAY(0.4, 0.6, 0.01)) ORDER BY threshold"
    )
    assert len(curve) == 21
    for row in curve:
        called = score >= float(row["threshold"])  # type: ignore[arg-type]
        assert row["true_positives"] == int(np.sum(called & (y == 1)))
        assert row["false_positives"] == int(np.sum(called & (y == 0)))
