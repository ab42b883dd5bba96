"""TorchServe's management and inference API details against one `inferline serve` process.

Called over a socket as TorchServe's docs do: scale workers, registering a second version
(not the default until set-default), preprocessing settings as query parameters, TorchServe's
error `type` names, a handler's `PredictionException` status, request headers and
`batch_size` in the handler's context, and `ts_queue_latency_microseconds`.
"""

from __future__ import annotations

import concurrent.futures
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import running_server
from tests.e2e.torchserve import archive, png
from tests.lazy import LazyModule, requires

torch = LazyModule("torch")
torch_nets = LazyModule("tests.torch_nets")  # imports torch: only when a test runs
pytestmark = requires("torch", "model_archiver", "ts")

PROBE_HANDLER = """
import os
import time

from ts.utils.util import PredictionException


class Probe:
    def initialize(self, context):
        self.batch_size = context.system_properties["batch_size"]
        self.version = context.manifest["model"]["modelVersion"]

    def handle(self, data, context):
        out = []
        for i, row in enumerate(data):
            body = row.get("body")
            if body.get("fail"):
                raise PredictionException("no tea here", body["fail"])
            if body.get("meet"):  # wait until another worker is inside handle() too
                open(os.path.join(body["meet"], str(id(self))), "w").close()
                deadline = time.monotonic() + 30
                while len(os.listdir(body["meet"])) < 2:
                    if time.monotonic() > deadline:
                        raise PredictionException("no other worker ran meanwhile", 504)
                    time.sleep(0.01)
            out.append({"version": self.version, "instance": id(self), "batch_size": self.batch_size,
                        "trace": context.get_request_header(i, "X-Trace"), "keys": sorted(row)})
        return out
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("v1"), tmp_path_factory.mktemp("v2")
    for folder, version in ((first, "1.0"), (second, "2.0")):
        (folder / "probe_handler.py").write_text(PROBE_HANDLER)
        archive(folder, "probe", "--version", version, "--handler", "probe_handler.py")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; it is still a safe format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch_nets.Mean()).save(str(second / "mean.pt"))
    return first, second


@pytest.fixture(scope="module")
def base(folders: tuple[Path, Path]) -> Iterator[str]:
    first, second = folders
    trusted = {"INFERLINE_TRUSTED_PATHS": str(second)}  # archives run code: their folder is listed
    args = ("--model-store", str(first), "--batch-size", "1", "--watch-interval", "0.2")
    with running_server(first / "probe.mar", *args, env=trusted, deadline_s=60) as url:
        yield url


def test_a_handler_reads_headers_and_batch_size_from_its_context(base: str) -> None:
    answer = httpx.post(f"{base}/predictions/probe", json={"n": 1}, headers={"X-Trace": "abc"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["trace"] == "abc" and answer.json()["keys"] == ["body"]
    assert answer.json()["batch_size"] == 1  # --batch-size (a registration's batch_size: below)
    failed = httpx.post(f"{base}/predictions/probe", json={"fail": 418}, timeout=30)
    assert failed.status_code == 418
    assert failed.json() == {
        "code": 418,
        "type": "InternalServerException",
        "message": "model probe: no tea here",
    }


def test_errors_carry_torchserve_exception_names(base: str) -> None:
    def error(method: str, path: str, **kwargs: object) -> tuple[int, str]:
        answer = httpx.request(method, f"{base}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]
        return answer.status_code, answer.json()["type"]

    assert error("POST", "/predictions/nope", json=[1]) == (404, "ModelNotFoundException")
    assert error("POST", "/predictions/probe/9.9", json=[1]) == (404, "ModelVersionNotFoundException")
    assert error("GET", "/predictions/probe") == (405, "MethodNotAllowedException")
    assert error("GET", "/nowhere") == (404, "ResourceNotFoundException")
    assert error("POST", "/models") == (400, "BadRequestException")
    bad_json = {"content": b"{oops", "headers": {"Content-Type": "application/json"}}
    assert error("POST", "/predictions/probe", **bad_json) == (400, "BadRequestException")


def test_scale_workers_runs_handler_instances_at_once(base: str, tmp_path: Path) -> None:
    [before] = httpx.get(f"{base}/models/probe").json()
    assert (before["minWorkers"], before["maxWorkers"], len(before["workers"])) == (1, 1, 1)
    scaled = httpx.put(f"{base}/models/probe?min_worker=2&synchronous=true", timeout=60)
    assert scaled.status_code == 200 and scaled.json() == {"status": "Workers scaled to 2 for model: probe"}
    [after] = httpx.get(f"{base}/models/probe").json()
    assert (after["minWorkers"], after["maxWorkers"], len(after["workers"])) == (2, 2, 2)

    # Each request waits inside handle() for the other: only two workers at once can answer.
    meet = {"meet": str(tmp_path)}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sent = [pool.submit(httpx.post, f"{base}/predictions/probe", json=meet, timeout=60) for _ in range(2)]
        answers = [future.result() for future in sent]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert len({a.json()["instance"] for a in answers}) == 2  # one handler instance per worker

    none = httpx.put(f"{base}/models/probe?min_worker=0&max_worker=3", timeout=30)
    assert none.status_code == 202 and none.json() == {"status": "Processing worker updates..."}
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/models/probe").json()[0]["minWorkers"] != 0:
        assert time.monotonic() < deadline, "scaling to 0 workers never happened"
        time.sleep(0.05)
    assert httpx.get(f"{base}/models/probe").json()[0]["maxWorkers"] == 3
    refused = httpx.post(f"{base}/predictions/probe", json={"n": 1}, timeout=30)
    assert refused.status_code == 503 and refused.json()["type"] == "ServiceUnavailableException"
    assert "has no worker to serve inference requests" in refused.json()["message"]

    wrong = httpx.put(f"{base}/models/probe?min_worker=3&max_worker=2", timeout=30)
    assert wrong.status_code == 400 and "max_worker cannot be less than min_worker" in wrong.json()["message"]
    assert httpx.put(f"{base}/models/probe/1.0?min_worker=1&synchronous=true", timeout=60).status_code == 200
    assert httpx.post(f"{base}/predictions/probe", json={"n": 1}, timeout=30).status_code == 200


def test_a_registered_version_waits_for_set_default(base: str, folders: tuple[Path, Path]) -> None:
    _, second = folders
    url = f"{base}/models?url={second / 'probe.mar'}&batch_size=3"
    added = httpx.post(url, timeout=60)
    assert added.status_code == 200, added.text
    assert added.json()["status"] == 'Model "probe" Version: 2.0 registered with 1 initial workers'
    assert httpx.post(url, timeout=60).status_code == 409

    def answering() -> tuple[str, int]:
        answer = httpx.post(f"{base}/predictions/probe", json={"n": 1}, timeout=30).json()
        return answer["version"], answer["batch_size"]

    time.sleep(0.5)  # not a wait for readiness: gives the store watcher (0.2 s) its chance to swap
    assert answering()[0] == "1.0"  # as TorchServe: the first version stays the default
    assert [d["modelVersion"] for d in httpx.get(f"{base}/models/probe").json()] == ["1.0"]
    every = httpx.get(f"{base}/models/probe/all").json()
    assert [(d["modelVersion"], d["isDefault"]) for d in every] == [("1.0", True), ("2.0", False)]
    default = httpx.delete(f"{base}/models/probe/1.0", timeout=30)
    assert default.status_code == 403 and default.json()["type"] == "InvalidModelVersionException"
    missing = httpx.delete(f"{base}/models/probe/7.7", timeout=30)
    assert missing.status_code == 404 and missing.json()["type"] == "ModelVersionNotFoundException"
    assert httpx.put(f"{base}/models/probe/2.0/set-default", timeout=60).status_code == 200
    assert answering() == ("2.0", 3)  # the handler's context has the registration's batch_size
    assert httpx.delete(f"{base}/models/probe/1.0", timeout=30).status_code == 200
    assert answering() == ("2.0", 3)


def test_registration_takes_image_settings_as_query_parameters(base: str, folders: tuple[Path, Path]) -> None:
    _, second = folders
    model = str(second / "mean.pt")
    params = {"url": model, "model_name": "mean", "resize": "4,4", "mode": "L", "scale": "255"}
    added = httpx.post(f"{base}/models", params=params, timeout=60)
    assert added.status_code == 200, added.text
    grey = httpx.put(f"{base}/predictions/mean", content=png((128, 0, 0), (9, 7), mode="L"), timeout=30)
    assert grey.status_code == 200, grey.text
    assert grey.json()["predictions"] == [pytest.approx(128 / 255, abs=1e-4)]

    for bad, message in (
        ({"resize": "a,b"}, "POST /models: resize='a,b'; expected numbers such as resize=224,224"),
        ({"mode": "CMYK"}, "'CMYK' is not supported; expected L or RGB"),
    ):
        refused = httpx.post(f"{base}/models", params={"url": model, "model_name": "m2", **bad}, timeout=60)
        assert refused.status_code == 400 and message in refused.json()["message"], refused.text


def test_queue_latency_has_torchserve_name(base: str) -> None:
    metrics = httpx.get(f"{base}/metrics", timeout=30).text
    line = next(
        x for x in metrics.splitlines() if x.startswith('ts_queue_latency_microseconds{model_name="probe"}')
    )
    assert float(line.split()[-1]) >= 0.0
