"""gRPC under load through a hot swap (0 failed calls), and the repository RPCs behind the token."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.conftest import free_port, subprocess_env
from tests.e2e.server import running_server

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "s3cret-token"


def test_swap_under_grpc_load_and_repository_rpcs(tmp_path: Path, iris_example: Path) -> None:
    store = ModelStore(str(tmp_path / "store"))
    model = str(iris_example / "models/iris-1.joblib")
    store.add("iris", model, inputs=list(FEATURES))
    port = free_port()
    args = ("--grpc-port", str(port), "--watch-interval", "0.2", "--token", TOKEN, "--max-body", "20000")
    with running_server(tmp_path / "store", *args) as base:
        address = f"127.0.0.1:{port}"
        versions: list[str] = []
        errors: list[str] = []
        stop = threading.Event()

        def load() -> None:
            client = grpcclient.InferenceServerClient(address)
            tensor = grpcclient.InferInput("input", [2, 4], "FP32")
            tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]] * 2, dtype=np.float32))
            while not stop.is_set():
                try:
                    versions.append(client.infer("iris", [tensor]).get_response().model_version)
                except InferenceServerException as exc:
                    errors.append(str(exc))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 60
            while len(versions) < 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            store.add("iris", model, inputs=list(FEATURES))  # version 2, picked up by the watcher
            while "2" not in versions[-20:] and time.monotonic() < deadline:
                time.sleep(0.05)
            seen = len(versions)
            while len(versions) < seen + 50 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert errors == []
        assert versions[0] == "1" and versions[-1] == "2" and len(versions) > 100

        # A second server cannot take the busy gRPC port (gRPC's SO_REUSEPORT is off).
        second = subprocess.run(
            [sys.executable, "-m", "inferline", "serve", "--models", str(tmp_path / "store")]
            + ["--port", str(free_port()), "--grpc-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
        )
        assert second.returncode != 0 and second.stderr.strip().splitlines()[-1] == (
            f"error: serve: --grpc-port {port} on 127.0.0.1 is already in use; pass a free --grpc-port, "
            "or --grpc-port 0 for no gRPC"
        )

        client = grpcclient.InferenceServerClient(address)
        big = grpcclient.InferInput("input", [1000, 4], "FP64")  # 32,000 bytes > --max-body
        big.set_data_from_numpy(np.zeros((1000, 4)))
        with pytest.raises(InferenceServerException, match=r"Received message larger than max") as large:
            client.infer("iris", [big])
        assert large.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        with pytest.raises(InferenceServerException, match=r"needs 'authorization: Bearer TOKEN'") as no:
            client.unload_model("iris")
        assert no.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException, match=r"RepositoryModelUnload: wrong token"):
            client.unload_model("iris", headers={"authorization": "Bearer nope"})
        auth = {"authorization": f"Bearer {TOKEN}"}
        client.unload_model("iris", headers=auth)
        assert not client.is_model_ready("iris")
        index = client.get_model_repository_index(headers=auth, as_json=True)["models"]
        assert index == [{"name": "iris", "state": "UNAVAILABLE", "reason": "unloaded"}]
        client.load_model("iris", headers=auth)
        assert client.is_model_ready("iris")
        rest = httpclient.InferenceServerClient(base.removeprefix("http://"))
        assert rest.get_model_repository_index(headers=auth) == [
            {"name": "iris", "version": "2", "state": "READY"}
        ]
        with pytest.raises(InferenceServerException, match=r"management needs 'Authorization: Bearer"):
            rest.unload_model("iris")
        rest.unload_model("iris", headers=auth)
        assert not rest.is_model_ready("iris")


def test_a_grpc_port_out_of_range_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "serve", "--models", str(tmp_path), "--grpc-port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "error: serve: --grpc-port 70000; expected 1-65535, or 0 for no gRPC"
