"""`inferline models add|list|versions|pin|unpin|remove` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CliRunner

ONNX = "examples/iris/models/iris-1.onnx"
JOBLIB = "examples/iris/models/iris-1.joblib"


def test_add_list_versions_pin_unpin_remove(project: Path, cli: CliRunner) -> None:
    added = cli(
        "models", "add", "iris", JOBLIB, "--inputs", "sepal_length,sepal_width", "--meta", "batch_size=32"
    )
    assert "added iris/1 (sklearn, sha256 " in added.stdout
    cli("models", "add", "iris", ONNX, "--outputs", "label,probabilities")
    assert (project / "model_store/iris/2/iris-1.onnx").exists()

    listed = cli("models", "list").stdout
    assert "models in model_store" in listed and "iris" in listed and "onnx" in listed
    rows = json.loads(cli("models", "list", "--json").stdout)
    assert rows[0]["name"] == "iris" and rows[0]["versions"] == 2 and rows[0]["current"] == 2

    table = cli("models", "versions", "iris").stdout
    assert "iris-1.joblib" in table and "sepal_length,sepal_width" in table and '"batch_size": 32' in table
    versions = json.loads(cli("models", "versions", "iris", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["metadata"] == {"batch_size": 32}
    assert versions[1]["metadata"] == {"outputs": ["label", "probabilities"]}

    assert "pinned iris/1" in cli("models", "pin", "iris", "1").stdout
    assert "(pinned to 1)" in cli("models", "versions", "iris").stdout
    assert json.loads(cli("models", "list", "--json").stdout)[0]["current"] == 1
    assert "current is iris/2" in cli("models", "unpin", "iris").stdout

    assert "removed iris/1" in cli("models", "remove", "iris", "1").stdout
    assert "iris/3" in cli("models", "add", "iris", ONNX).stdout
    cli("models", "remove", "iris")
    assert "no models in model_store" in cli("models", "list").stdout


def test_store_from_option_and_environment(project: Path, cli: CliRunner) -> None:
    cli("models", "add", "iris", ONNX, "--store", "elsewhere")
    assert (project / "elsewhere/iris/1/iris-1.onnx").exists()
    rows = json.loads(cli("models", "list", "--json", env={"INFERLINE_STORE": "elsewhere"}).stdout)
    assert [r["name"] for r in rows] == ["iris"]


def test_errors_are_one_line(project: Path, cli: CliRunner) -> None:
    result = cli("models", "versions", "nope", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: model store model_store: no model 'nope' (the store is empty); "
        "add it with: inferline models add nope FILE --store model_store"
    )
    result = cli("models", "add", "iris", ONNX, "--meta", "oops", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --meta 'oops': expected key=value, e.g. --meta batch_size=32"
    cli("models", "add", "iris", ONNX)
    result = cli("models", "pin", "iris", "5", check=False)
    assert result.returncode == 1 and "model 'iris' has no version 5 (have: 1)" in result.stderr


def test_pipeline_reads_its_model_from_the_store(project: Path, cli: CliRunner) -> None:
    # Both versions ONNX: a .joblib version would import scikit-learn in its run (~1.5 s CPU).
    cli("models", "add", "iris", ONNX)
    cli("models", "add", "iris", ONNX)
    store_model = ["--set", "model.uri=null", "--set", "model.store=model_store"]
    result = cli("run", "examples/iris/pipeline.yaml", *store_model)
    assert "150 predicted" in result.stdout and "model: iris/2" in result.stdout
    cli("models", "pin", "iris", "1")
    assert "model: iris/1" in cli("run", "examples/iris/pipeline.yaml", *store_model).stdout
    spec_pin = cli("run", "examples/iris/pipeline.yaml", *store_model, "--set", "model.version=2").stdout
    assert "model: iris/2" in spec_pin
    result = cli("run", "examples/iris/pipeline.yaml", *store_model, "--set", "model.version=7", check=False)
    assert result.returncode == 1
    assert "error: model store model_store: model 'iris' has no version 7 (have: 1, 2)" in result.stderr
