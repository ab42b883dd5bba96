"""`inferline serve` management API, token rules and hot swap, against real server processes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.conftest import subprocess_env
from tests.e2e.server import running_server

IRIS = load_iris()


@pytest.fixture
def store(tmp_path: Path, iris_example: Path) -> Path:
    root = tmp_path / "store"
    ModelStore(str(root)).add("iris", str(iris_example / "models/iris-1.joblib"), inputs=FEATURES)
    return root


@pytest.fixture
def onnx_store(tmp_path: Path, iris_example: Path) -> Path:
    """For tests about tokens, not models: loading the .joblib imports scikit-learn (~1.5 s CPU)."""
    root = tmp_path / "store"
    ModelStore(str(root)).add("iris", str(iris_example / "models/iris-1.onnx"))
    return root


@pytest.fixture
def shifted_model(tmp_path: Path) -> tuple[Path, DecisionTreeClassifier]:
    """A v2 that predicts differently: trained on labels shifted by one class."""
    model = DecisionTreeClassifier(random_state=0).fit(IRIS.data, (IRIS.target + 1) % 3)
    path = tmp_path / "incoming" / "iris-shifted.joblib"
    path.parent.mkdir()
    joblib.dump(model, path)
    return path, model


def test_register_set_default_unregister(
    store: Path, tmp_path: Path, shifted_model: tuple[Path, DecisionTreeClassifier]
) -> None:
    path, model = shifted_model
    row = list(IRIS.data[0])
    trusted = {"INFERLINE_TRUSTED_PATHS": f"{path.parent}:{store}"}
    with running_server(store, "--watch-interval", "0", env=trusted) as base:
        outside = tmp_path / "elsewhere.joblib"
        shutil.copy(path, outside)
        refused = httpx.post(f"{base}/models", params={"url": str(outside), "model_name": "iris"})
        assert refused.status_code == 400
        message = refused.json()["message"]
        assert "refusing to load a sklearn file registered over HTTP (it could run code)" in message
        missing = httpx.post(f"{base}/models", params={"model_name": "iris"})
        assert missing.status_code == 400 and "missing ?url=PATH" in missing.json()["message"]

        added = httpx.post(
            f"{base}/models",
            params={"url": str(path), "model_name": "iris", "batch_size": "8", "max_batch_delay": "2"},
        )
        assert added.status_code == 200, added.text
        assert added.json()["status"] == 'Model "iris" Version: 2 registered with 1 initial workers'
        assert added.json()["batchSize"] == 8
        # As TorchServe: a later version is not the default until set-default says so.
        assert httpx.post(f"{base}/predictions/iris", json=row).json()["model_id"] == "iris/1"
        assert ModelStore(str(store)).pinned("iris") == 1
        versions = httpx.get(f"{base}/models/iris/all").json()
        assert [(v["modelVersion"], v["isDefault"], v["batchSize"]) for v in versions] == [
            ("1", True, 8),
            ("2", False, 8),
        ]
        assert httpx.put(f"{base}/models/iris/2/set-default").status_code == 200
        now = httpx.post(f"{base}/predictions/iris", json=row).json()
        assert now == {
            "model_id": "iris/2",
            "predictions": [int(model.predict([row])[0])],
            "scores": [[0, 1, 0]],
        }

        assert httpx.put(f"{base}/models/iris/1/set-default").status_code == 200
        assert httpx.post(f"{base}/predictions/iris", json=row).json()["model_id"] == "iris/1"
        assert ModelStore(str(store)).pinned("iris") == 1
        assert httpx.post(f"{base}/predictions/iris/2", json=row).json()["model_id"] == "iris/2"

        refused_default = httpx.delete(f"{base}/models/iris/1")
        assert refused_default.status_code == 403 and "it is the default version" in refused_default.text
        assert httpx.delete(f"{base}/models/iris/2").status_code == 200
        gone = httpx.post(f"{base}/predictions/iris/2", json=row)
        assert gone.status_code == 404 and gone.json()["type"] == "ModelVersionNotFoundException"
        assert httpx.delete(f"{base}/models/iris").json() == {"status": 'Model "iris" unregistered'}
        assert httpx.get(f"{base}/models").json() == {"models": []}
        assert httpx.post(f"{base}/predictions/iris", json=row).status_code == 404
        assert (store / "iris" / "2").is_dir()  # unregistering never deletes files


def test_token_guards_management_on_a_network_bind(onnx_store: Path, project: Path) -> None:
    store = onnx_store
    refused = subprocess.run(
        [sys.executable, "-m", "inferline", "serve", "--models", str(store), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert refused.returncode == 1
    assert "error: serve: binding 0.0.0.0 exposes the management API to the network; pass --token" in (
        refused.stderr
    )
    with running_server(store, "--token", "s3cret", host="0.0.0.0") as base:  # traffic: 127.0.0.1 only
        assert httpx.get(f"{base}/models").status_code == 401
        assert httpx.get(f"{base}/models", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert httpx.delete(f"{base}/models/iris").status_code == 401
        ok = httpx.get(f"{base}/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["models"][0]["modelName"] == "iris"
        assert httpx.post(f"{base}/predictions/iris", json=list(IRIS.data[0])).status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 200


def test_token_on_loopback_is_required_too(onnx_store: Path) -> None:
    with running_server(onnx_store, "--token", "abc") as base:
        unauthorized = httpx.get(f"{base}/models")
        assert unauthorized.status_code == 401
        assert unauthorized.headers["www-authenticate"] == "Bearer"
        assert "management needs 'Authorization: Bearer TOKEN'" in unauthorized.json()["message"]
        assert httpx.get(f"{base}/models", headers={"Authorization": "Bearer abc"}).status_code == 200


def test_hot_swap_under_load_fails_no_request_and_a_corrupt_next_version_leaves_it_serving(
    store: Path, tmp_path: Path, shifted_model: tuple[Path, DecisionTreeClassifier]
) -> None:
    path, model = shifted_model
    rows = IRIS.data[np.arange(0, 150, 7)]
    want_v2 = [int(v) for v in model.predict(rows)]
    svc = joblib.load(ModelStore(str(store)).current("iris").uri)
    want_v1 = [int(v) for v in svc.predict(rows)]
    assert want_v1 != want_v2

    with running_server(store, "--watch-interval", "0.2") as base:
        seen: list[tuple[int, str, list[int]]] = []

        async def load(stop: threading.Event) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:

                async def worker() -> None:
                    while not stop.is_set():
                        answer = await client.post("/predictions/iris", json=rows.tolist())
                        body = answer.json()
                        seen.append(
                            (answer.status_code, body.get("model_id", ""), body.get("predictions", []))
                        )

                await asyncio.gather(*(worker() for _ in range(8)))

        stop = threading.Event()
        loader = threading.Thread(target=lambda: asyncio.run(load(stop)))
        loader.start()
        try:
            deadline = time.monotonic() + 30
            while len(seen) < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            ModelStore(str(store)).add("iris", str(path), inputs=FEATURES)
            while not any(m == "iris/2" for _, m, _ in seen[-8:]) and time.monotonic() < deadline:
                time.sleep(0.05)
            count = len(seen)
            while len(seen) < count + 40 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            loader.join(30)
        versions = httpx.get(f"{base}/models/iris/all").json()
        assert [(v["modelVersion"], v["isDefault"], v["loaded"]) for v in versions] == [
            ("1", False, False),  # the replaced version was unloaded
            ("2", True, True),
        ]
        assert httpx.post(f"{base}/predictions/iris/1", json=rows.tolist()).json()["predictions"] == want_v1

        # A corrupt next version (same server: one start fewer) leaves version 2 serving.
        broken = tmp_path / "broken.joblib"
        broken.write_bytes(b"this is not a model")
        ModelStore(str(store)).add("iris", str(broken), inputs=FEATURES)
        deadline = time.monotonic() + 60
        log = store.parent / next(p.name for p in store.parent.glob("server-*.log"))
        while "model iris/3: cannot load, still serving version 2: " not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        answer = httpx.post(f"{base}/predictions/iris", json=list(IRIS.data[0]))
        assert answer.status_code == 200 and answer.json()["model_id"] == "iris/2"
        asked = httpx.post(f"{base}/predictions/iris/3", json=list(IRIS.data[0]))
        assert asked.status_code == 500 and asked.json()["type"] == "InternalServerException"
        assert "model iris/3: cannot load it (model " in asked.json()["message"]
        assert "the default keeps serving" in asked.json()["message"]
    assert {status for status, _, _ in seen} == {200}, [s for s in seen if s[0] != 200][:3]
    ids = [model_id for _, model_id, _ in seen]
    assert ids[0] == "iris/1" and ids[-1] == "iris/2", (len(ids), ids[:3], ids[-3:])
    first_v2 = ids.index("iris/2")
    assert set(ids[first_v2 + 8 :]) == {"iris/2"}, ids[first_v2 : first_v2 + 20]  # only in-flight ones on v1
    for _, model_id, predictions in seen:
        assert predictions == (want_v2 if model_id == "iris/2" else want_v1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "error: serve: --batch-size 0; expected a positive number"),
        (["--max-body", "-1"], "error: serve: --max-body -1; expected a positive number"),
        (["--token", "  "], "error: serve: --token is empty or whitespace; pass a real secret"),
        (["--host", "0.0.0.0", "--token", " \t"], "error: serve: --token is empty or whitespace"),
        (
            ["--allow-origin", "localhost:3000"],
            "error: serve: --allow-origin 'localhost:3000'; expected an origin like http://localhost:3000",
        ),
    ],
)
def test_bad_options_are_refused(onnx_store: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "serve", "--models", str(onnx_store), *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert result.returncode == 1 and message in result.stderr
