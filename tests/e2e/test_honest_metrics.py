"""Metrics and metadata that only claim what the model gives: ML.EVALUATE's log_loss/roc_auc
need real probabilities, and /v2/models/NAME lists only the outputs an infer answer has."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.examples.iris import FEATURES, save_joblib, save_onnx
from tests.conftest import CliRunner
from tests.e2e.server import running_server

COLUMNS = ", ".join(FEATURES)
EVALUATE = (
    "SELECT * FROM ML.EVALUATE(MODEL ds.{model}, (SELECT {columns}, target AS label "
    "FROM read_csv('examples/iris/data/iris.csv')))"
)


def evaluate(cli: CliRunner, model: str, path: str) -> tuple[dict[str, float | None], str]:
    result = cli(
        "sql",
        "--db",
        "w.duckdb",
        "--format",
        "json",
        f"CREATE OR REPLACE MODEL ds.{model} OPTIONS(model_type='onnx', model_path='{path}'); "
        + EVALUATE.format(model=model, columns=COLUMNS),
    )
    return json.loads(result.stdout), result.stderr


def test_svc_decision_scores_give_no_log_loss_or_auc_and_say_why(cli: CliRunner) -> None:
    # The quickstart's ONNX SVC answers `probabilities` that are decision scores (rows > 1).
    row, stderr = evaluate(cli, "svc", "examples/iris/models/iris-*.onnx")
    assert row["log_loss"] is None and row["roc_auc"] is None
    assert row["accuracy"] is not None and row["accuracy"] > 0.95
    assert stderr.strip() == (
        "warning: ML.EVALUATE(MODEL ds.svc): log_loss and roc_auc are NULL: the model's "
        "probabilities are not probabilities (rows must be in [0, 1] and sum to 1; an SVC "
        "without probability=True gives decision scores)"
    )


def test_real_probabilities_give_sklearns_log_loss_and_auc(cli: CliRunner, project: Path) -> None:
    iris = load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    save_onnx(model, str(project / "lr-1.onnx"), n_features=4)
    row, stderr = evaluate(cli, "lr", "lr-1.onnx")
    data = np.round(iris.data, 1)  # the CSV holds one decimal, as the model sees it
    probabilities = model.predict_proba(data.astype(np.float32))
    assert stderr == ""
    assert row["log_loss"] == pytest.approx(metrics.log_loss(iris.target, probabilities), abs=1e-4)
    assert row["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(iris.target, probabilities, multi_class="ovr"), abs=1e-4
    )


def test_v2_metadata_lists_only_the_outputs_infer_answers(cli: CliRunner, project: Path) -> None:
    iris = load_iris()
    save_joblib(LogisticRegression(max_iter=1000).fit(iris.data, iris.target), str(project / "lr-1.joblib"))
    inputs = ",".join(FEATURES)
    cli("models", "add", "svc", "examples/iris/models/iris-1.joblib", "--inputs", inputs)
    cli("models", "add", "svc_onnx", "examples/iris/models/iris-1.onnx", "--inputs", inputs)
    cli("models", "add", "lr", "lr-1.joblib", "--inputs", inputs)
    tensor = {
        "name": "input",
        "shape": [2, 4],
        "datatype": "FP64",
        "data": iris.data[[0, 100]].ravel().tolist(),
    }
    advertised: dict[str, list[dict[str, object]]] = {}
    with running_server(project / "model_store") as base:
        for name in ("svc", "svc_onnx", "lr"):
            outputs = httpx.get(f"{base}/v2/models/{name}", timeout=30).json()["outputs"]
            answer = httpx.post(
                f"{base}/v2/models/{name}/infer", json={"inputs": [tensor]}, timeout=30
            ).json()
            got = [(o["name"], o["datatype"]) for o in answer["outputs"]]
            assert [(o["name"], o["datatype"]) for o in outputs] == got, name
            advertised[name] = outputs
    assert [o["name"] for o in advertised["svc"]] == ["predictions"]  # an SVC has no predict_proba
    assert [o["name"] for o in advertised["lr"]] == ["predictions", "scores"]
    assert advertised["lr"][1] == {"name": "scores", "datatype": "FP64", "shape": [-1, 3]}
    assert [o["name"] for o in advertised["svc_onnx"]] == ["predictions", "scores"]
