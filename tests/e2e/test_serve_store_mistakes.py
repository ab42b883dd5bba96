"""Store mistakes found while making inferline a TorchServe drop-in (issue 20)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from inferline.models.store import ModelStore
from tests.conftest import CliRunner
from tests.e2e.server import running_server

JOBLIB = "examples/iris/models/iris-1.joblib"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_a_bad_handler_fails_its_own_model_only_and_hot_swap_goes_on(project: Path) -> None:
    store = project / "model_store"
    models = ModelStore(str(store))
    models.add("aaa", JOBLIB, inputs=FEATURES)
    models.add("iris", JOBLIB, inputs=FEATURES)
    # TorchServe's index_to_name.json as labels= (it was read as a one-line text file: every request 500)
    labels = project / "index_to_name.json"
    labels.write_text('{"0": ["n01", "setosa"], "1": ["n02", "versicolor"], "2": ["n03", "virginica"]}')
    models.add("named", JOBLIB, inputs=FEATURES, metadata={"labels": str(labels)})
    with running_server(store, "--watch-interval", "0.1") as base:
        named = httpx.post(f"{base}/predictions/named", json=[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
        assert named.status_code == 200 and named.json()["label"] == ["setosa", "virginica"], named.text
        # Written straight into the store (models add refuses it): sorted first, it used to
        # stop every swap after it.
        models.add("aaa", JOBLIB, inputs=FEATURES, metadata={"handler": "no_such_module:Hook"})
        models.add("new", JOBLIB, inputs=FEATURES, metadata={"handler": "no_such_module:Hook"})
        models.add("iris", JOBLIB, inputs=FEATURES)
        deadline = time.monotonic() + 30
        row = [5.1, 3.5, 1.4, 0.2]
        while httpx.post(f"{base}/predictions/iris", json=row).json()["model_id"] != "iris/2":
            assert time.monotonic() < deadline, "iris/2 never swapped in"
            time.sleep(0.1)
        assert httpx.post(f"{base}/predictions/aaa", json=row).json()["model_id"] == "aaa/1"
        log = next(store.parent.glob("server-*.log"))
        while "model new/1: cannot load, not serving it: " not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "model aaa/2: cannot load, still serving version 1: " in text
        assert "still serving the old version" not in text


def test_models_add_checks_handler_and_labels(project: Path, cli: CliRunner) -> None:
    bad_handler = cli("models", "add", "iris", JOBLIB, "--meta", "handler=no_such_module:Hook", check=False)
    assert bad_handler.returncode != 0
    assert bad_handler.stderr.startswith("error: models add iris: --meta handler")
    assert "no_such_module" in bad_handler.stderr and len(bad_handler.stderr.strip().splitlines()) == 1
    bad_labels = cli("models", "add", "iris", JOBLIB, "--meta", "labels=missing.txt", check=False)
    assert bad_labels.returncode != 0
    assert "error: models add iris: --meta: labels file missing.txt not found" in bad_labels.stderr
    assert not (project / "model_store" / "iris").exists()
    (project / "labels.json").write_text('{"0": "setosa", "1": "versicolor", "2": "virginica"}')
    cli("models", "add", "iris", JOBLIB, "--meta", "labels=labels.json")


def test_serve_refuses_a_store_that_does_not_exist(project: Path, cli: CliRunner) -> None:
    result = cli("serve", "--models", "nowhere", "--port", "0", check=False, timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith("error: serve: --models nowhere: no such model store; create it with")
    missing = cli("serve", "--models", "mnist=nope.mar", check=False, timeout=60)
    assert "error: serve: --models mnist=nope.mar: archive nope.mar not found" in missing.stderr
