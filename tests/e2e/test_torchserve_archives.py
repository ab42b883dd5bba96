"""TorchServe `.mar` archives built with torch-model-archiver, served as TorchServe documents them.

Three archives are made here: a TorchScript colour classifier with the built-in
`image_classifier` handler and `index_to_name.json`, a custom `BaseHandler` subclass over an
eager model (`modelFile` + state_dict), and a module-level `handle(data, context)` that echoes
the request items it is given.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, subprocess_env
from tests.e2e.server import running_server
from tests.e2e.torchserve import archive, png
from tests.lazy import LazyModule, requires

torch = LazyModule("torch")
torch_nets = LazyModule("tests.torch_nets")  # imports torch: only when a test runs
Image = pytest.importorskip("PIL.Image")
pytestmark = requires("torch", "model_archiver")

LABELS = {"0": "red", "1": "green", "2": "blue"}

EAGER_MODEL = """
import torch


class Summer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Linear(1, 1, bias=False)

    def forward(self, x):
        return self.scale(x.sum(dim=1, keepdim=True))
"""

BASE_HANDLER = """
import time

import torch
from ts.torch_handler.base_handler import BaseHandler


class SumHandler(BaseHandler):
    def preprocess(self, data):
        self.batch = len(data)
        if any(row.get("body")["x"][0] < 0 for row in data):
            time.sleep(2.0)  # a slow first request: the others queue up behind it meanwhile
        return torch.tensor([row.get("body")["x"] for row in data], dtype=torch.float32)

    def postprocess(self, data):
        model_dir = self.context.system_properties["model_dir"]
        return [{"sum": float(v), "batch": self.batch, "has_dir": bool(model_dir)} for v in data[:, 0]]
"""

ECHO_HANDLER = """
def handle(data, context):
    name = context.manifest["model"]["modelName"]
    out = []
    for row in data:
        value = row.get("data") or row.get("body")
        out.append({"model": name, "keys": sorted(row), "kind": type(value).__name__,
                    "size": len(value) if isinstance(value, (bytes, str, list, dict)) else None})
    return out
"""


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mars")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; TorchServe archives use it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch_nets.Colors()).save(str(folder / "colors.pt"))
    (folder / "index_to_name.json").write_text(json.dumps(LABELS))
    archive(folder, "colors", "--version", "1.0", "--serialized-file", "colors.pt",
            "--handler", "image_classifier", "--extra-files", "index_to_name.json")  # fmt: skip

    (folder / "model.py").write_text(EAGER_MODEL)
    (folder / "sum_handler.py").write_text(BASE_HANDLER)
    namespace: dict[str, object] = {}
    exec(EAGER_MODEL, namespace)
    model = namespace["Summer"]()  # type: ignore[operator]
    with torch.no_grad():
        model.scale.weight.fill_(2.0)
    torch.save(model.state_dict(), folder / "summer.pth")
    archive(folder, "summer", "--version", "2.5", "--model-file", "model.py",
            "--serialized-file", "summer.pth", "--handler", "sum_handler.py")  # fmt: skip

    (folder / "echo_handler.py").write_text(ECHO_HANDLER)
    archive(folder, "echo", "--version", "1.0", "--handler", "echo_handler.py")  # fmt: skip
    for leftover in ("colors.pt", "index_to_name.json", "model.py", "sum_handler.py", "summer.pth"):
        (folder / leftover).unlink()
    (folder / "echo_handler.py").unlink()
    return folder


def test_models_add_takes_name_and_version_from_the_manifest(archives: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    command = ["models", "add", str(archives / "colors.mar"), "--store", str(store)]
    added = subprocess.run(
        [sys.executable, "-m", "inferline", *command],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=True,
    )
    assert "added colors/1 (torchserve" in added.stdout
    record = json.loads((store / "colors/1/inferline.json").read_text())
    assert record["metadata"]["model_version"] == "1.0"
    assert record["metadata"]["ts_handler"] == "image_classifier"


def test_builtin_image_classifier_answers_top_labels(archives: Path) -> None:
    with running_server(archives / "colors.mar", "--model-store", str(archives)) as base:
        red = httpx.post(f"{base}/predictions/colors", content=png((250, 10, 10)),
                         headers={"Content-Type": "image/png"}, timeout=30)  # fmt: skip
        assert red.status_code == 200, red.text
        answer = red.json()
        assert list(answer)[0] == "red" and set(answer) == {"red", "green", "blue"}
        assert answer["red"] > 0.9 and abs(sum(answer.values()) - 1.0) < 1e-4

        # curl -T (PUT, no Content-Type) and the archive's version string in the route
        put = httpx.put(f"{base}/predictions/colors/1.0", content=png((5, 240, 5)), timeout=30)
        assert put.status_code == 200, put.text
        assert list(put.json())[0] == "green"

        # -F data=@blue.png -F data=@red.png: two instances, answered in order
        files = [
            ("data", ("b.png", png((0, 0, 255)), "image/png")),
            ("data", ("r.png", png((255, 0, 0)), "image/png")),
        ]
        both = httpx.post(f"{base}/predictions/colors", files=files, timeout=30)
        assert both.status_code == 200, both.text
        assert [list(a)[0] for a in both.json()] == ["blue", "red"]

        missing = httpx.post(f"{base}/predictions/colors/9.9", content=png((1, 2, 3)), timeout=30)
        assert missing.status_code == 404


def test_custom_base_handler_gets_batches_and_its_context(archives: Path) -> None:
    args = ("--models", "echo.mar", "--model-store", str(archives), "--batch-size", "4",
            "--max-batch-delay", "3000")  # fmt: skip
    with running_server(archives / "summer.mar", *args) as base:

        def send(x: list[float]) -> httpx.Response:
            return httpx.post(f"{base}/predictions/summer/2.5", json={"x": x}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            slow = pool.submit(send, [-1.0, 0.0])
            time.sleep(0.3)  # not a wait for readiness: only lets the slow request go first
            answers = list(pool.map(send, [[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]]))
            first = slow.result()
        assert first.status_code == 200 and first.json()["sum"] == -2.0, first.text
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        bodies = [a.json() for a in answers]
        assert [b["sum"] for b in bodies] == [6.0, 14.0, 2.0]  # weight 2 from the state_dict
        assert all(b["has_dir"] for b in bodies)
        assert max(b["batch"] for b in bodies) > 1  # queued requests reach the handler as one list


def test_request_formats_reach_a_handle_function_as_torchserve_items(archives: Path) -> None:
    with running_server(archives / "echo.mar") as base:
        url = f"{base}/predictions/echo"
        raw = httpx.put(url, content=b"\x00\x01raw", timeout=30).json()
        assert raw == {"model": "echo", "keys": ["body"], "kind": "bytes", "size": 5}
        octet_stream = {"Content-Type": "application/octet-stream"}
        octet = httpx.post(url, content=b"abc", headers=octet_stream, timeout=30)
        assert octet.json()["kind"] == "bytes"
        as_json = httpx.post(url, json={"a": [1, 2]}, timeout=30).json()
        assert as_json == {"model": "echo", "keys": ["body"], "kind": "dict", "size": 1}
        form = httpx.post(url, files=[("data", ("a.bin", b"12345")), ("body", ("b.bin", b"12"))],
                          data={"note": "x"}, timeout=30)  # fmt: skip
        assert form.status_code == 200, form.text
        assert form.json() == [
            {"model": "echo", "keys": ["data", "note"], "kind": "bytes", "size": 5},
            {"model": "echo", "keys": ["body", "note"], "kind": "bytes", "size": 2},
        ]


def test_management_registers_describes_and_deletes_archives_as_torchserve(archives: Path) -> None:
    # Archives run their handler's code: registering one over HTTP needs its folder trusted.
    with running_server(archives / "echo.mar", env={"INFERLINE_TRUSTED_PATHS": str(archives)}) as base:
        url = f"{base}/models?url={archives / 'colors.mar'}"
        registered = httpx.post(url, timeout=60)
        assert registered.status_code == 200, registered.text
        assert registered.json()["modelName"] == "colors"
        again = httpx.post(url, timeout=60)
        assert again.status_code == 409 and again.json()["type"] == "ConflictStatusException"
        assert "model 'colors' version '1.0' is already registered" in again.json()["message"]

        first = httpx.get(f"{base}/models?limit=1").json()
        assert [m["modelName"] for m in first["models"]] == ["colors"] and first["nextPageToken"] == "1"
        second = httpx.get(f"{base}/models?limit=1&next_page_token=1").json()
        assert [m["modelName"] for m in second["models"]] == ["echo"] and "nextPageToken" not in second
        assert httpx.get(f"{base}/models?limit=0").status_code == 400
        api = httpx.request("OPTIONS", f"{base}/").json()
        assert api["openapi"].startswith("3.") and {"post", "put"} <= set(api["paths"]["/predictions/{name}"])
        assert "delete" in api["paths"]["/models/{name}/{version}"]

        described = httpx.get(f"{base}/models/colors/all").json()
        assert [d["modelVersion"] for d in described] == ["1.0"]
        one = described[0]
        assert one["modelName"] == "colors" and one["runtime"] == "python" and one["loadedAtStartup"]
        assert one["workers"][0]["status"] == "READY" and one["minWorkers"] == one["maxWorkers"] == 1
        assert set(one["jobQueueStatus"]) == {"remainingCapacity", "pendingRequests"}
        assert {"batchSize", "maxBatchDelay", "modelUrl"} <= set(one)
        assert httpx.get(f"{base}/models/colors/1.0").json() == described

        image = png((250, 0, 0))
        red = httpx.post(f"{base}/predictions/colors/1.0", content=image, timeout=30).json()
        assert list(red)[0] == "red"
        missing = httpx.delete(f"{base}/models/colors/9")
        assert missing.status_code == 404 and missing.json()["type"] == "ModelVersionNotFoundException"
        assert httpx.post(f"{base}/predictions/colors", content=image, timeout=30).status_code == 200
        assert httpx.delete(f"{base}/models/colors/1.0").status_code == 200
        assert httpx.post(f"{base}/predictions/colors", content=image, timeout=30).status_code == 404


def test_vertex_ai_contract_from_its_variables(archives: Path, tmp_path: Path) -> None:
    port = free_port()
    predict_route = "/v1/endpoints/1/deployedModels/2:predict"
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/health",
        "AIP_PREDICT_ROUTE": predict_route,
        "AIP_STORAGE_URI": f"file://{archives}",  # an fsspec URI, as gs://bucket/mars would be
        "AIP_MODE": "PREDICTION",
    }
    log = open(tmp_path / "server.log", "w+", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferline", "serve"],
        stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(env), start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.seek(0) or log.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not healthy within 60 s"
            time.sleep(0.1)
        instances = [{"b64": base64.b64encode(png(c)).decode()} for c in ((0, 0, 250), (0, 250, 0))]
        body = {"instances": instances, "parameters": {}}
        answer = httpx.post(f"{base}{predict_route}", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]  # colors.mar: the first model by name
        assert [list(p)[0] for p in predictions] == ["blue", "green"]
        bad = httpx.post(f"{base}{predict_route}", json=[1, 2], timeout=30)
        assert bad.status_code == 400 and "Vertex AI's body" in bad.json()["message"]
        assert httpx.get(f"{base}/models", timeout=30).status_code == 401  # management locked
        log.seek(0)
        assert "Vertex AI: port" in log.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
