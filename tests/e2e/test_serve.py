"""`inferline serve` as a real process: TorchServe and KServe v2 routes, errors, batching, metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.e2e.server import running_server

IRIS = load_iris()


@pytest.fixture(scope="module")
def iris_store(tmp_path_factory: pytest.TempPathFactory, iris_example: Path) -> Path:
    store = tmp_path_factory.mktemp("serve") / "store"
    iris = str(iris_example / "models/iris-1.joblib")
    ModelStore(str(store)).add("iris", iris, inputs=FEATURES, metadata={"batch_size": 16})
    return store


@pytest.fixture(scope="module")
def server(iris_store: Path) -> Iterator[str]:
    with running_server(iris_store, "--max-body", "20000", "--max-batch-delay", "20") as base:
        yield base


@pytest.fixture(scope="module")
def svc(iris_example: Path) -> object:
    return joblib.load(iris_example / "models/iris-1.joblib")


def expected(svc: object, rows: np.ndarray) -> list[int]:
    return [int(v) for v in svc.predict(rows)]  # type: ignore[attr-defined]


def test_torchserve_inference_api(server: str, svc: object) -> None:
    assert httpx.get(f"{server}/ping").json() == {"status": "Healthy"}
    rows = IRIS.data[[0, 60, 120]]
    one = httpx.post(f"{server}/predictions/iris", json=list(rows[2]))
    assert one.status_code == 200 and one.headers["x-model-id"] == "iris/1"
    assert one.json() == {"model_id": "iris/1", "predictions": expected(svc, rows[2:])}
    many = httpx.post(f"{server}/predictions/iris", json=rows.tolist()).json()
    assert many["predictions"] == expected(svc, rows)
    wrapped = httpx.post(f"{server}/predictions/iris/1", json={"instances": rows.tolist()}).json()
    assert wrapped["predictions"] == expected(svc, rows)
    named = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]
    assert httpx.post(f"{server}/predictions/iris", json=named).json()["predictions"] == expected(svc, rows)


def test_kserve_v2_api(server: str, svc: object) -> None:
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server}/v2/models/iris").json()
    assert meta["name"] == "iris" and meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": name, "datatype": "FP64", "shape": [-1]} for name in FEATURES]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]  # SVC: no scores
    assert httpx.get(f"{server}/v2/models/iris/versions/1").json()["parameters"]["model_id"] == "iris/1"
    assert httpx.get(f"{server}/v2/models/iris/ready").json()["ready"] is True
    assert httpx.get(f"{server}/v2/models/iris/versions/1/ready").status_code == 200

    rows = IRIS.data[[5, 70, 140]]
    tensor = {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": rows.reshape(-1).tolist()}
    answer = httpx.post(f"{server}/v2/models/iris/infer", json={"id": "r1", "inputs": [tensor]}).json()
    assert answer["model_name"] == "iris" and answer["model_version"] == "1" and answer["id"] == "r1"
    assert answer["outputs"] == [
        {"name": "predictions", "datatype": "INT64", "shape": [3], "data": expected(svc, rows)}
    ]
    columns = [
        {"name": name, "shape": [3], "datatype": "FP64", "data": rows[:, i].tolist()}
        for i, name in enumerate(FEATURES)
    ]
    by_column = httpx.post(f"{server}/v2/models/iris/versions/1/infer", json={"inputs": columns}).json()
    assert by_column["outputs"][0]["data"] == expected(svc, rows)


def test_management_read_routes(server: str) -> None:
    assert httpx.get(f"{server}/models").json()["models"][0]["modelName"] == "iris"
    [version] = httpx.get(f"{server}/models/iris").json()
    assert version["modelVersion"] == "1" and version["isDefault"] and version["inputs"] == FEATURES
    assert (version["batchSize"], version["maxBatchDelay"]) == (16, 20.0)  # from metadata, --max-batch-delay


def error(response: httpx.Response, code: int, pattern: str) -> None:
    """A JSON error: `{"error"}` on v2 routes (as its clients read it), else `{"code", "type", "message"}`."""
    assert response.status_code == code, response.text
    body = response.json()
    if response.url.path.startswith("/v2"):
        assert set(body) == {"error"}
        message = body["error"]
    else:
        assert set(body) == {"code", "type", "message"} and body["code"] == code
        message = body["message"]
    assert re.search(pattern, message), message


def test_errors_are_json_and_the_server_keeps_serving(server: str, svc: object) -> None:
    post = httpx.post
    error(
        post(f"{server}/predictions/roses", json=[1, 2, 3, 4]), 404, r"model 'roses' is not served; have iris"
    )
    error(post(f"{server}/predictions/iris/9", json=[1, 2, 3, 4]), 404, r"has no version 9")
    error(post(f"{server}/v2/models/roses/infer", json={}), 404, r"model 'roses' is not served")
    error(
        post(
            f"{server}/predictions/iris", content=b"[5.1, 3.5", headers={"content-type": "application/json"}
        ),
        400,
        r"POST /predictions/iris: malformed JSON body",
    )
    error(post(f"{server}/v2/models/iris/infer", json={"inputs": []}), 400, r"expected \{\"inputs\"")
    error(
        post(f"{server}/predictions/iris", json=[[1, 2, 3]]),
        422,
        r"input 'instances' has shape \[1, 3\]; expected \[-1, 4\]",
    )
    error(
        post(f"{server}/predictions/iris", json=[["a", 2, 3, 4]]),
        422,
        r"instance 0, field sepal_length is the string 'a'; expected a finite number",
    )
    error(
        post(f"{server}/predictions/iris", json=[{"sepal_length": 1}]),
        422,
        r"instance 0 lacks sepal_width, petal_length, petal_width",
    )
    bad_shape = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    error(
        post(f"{server}/v2/models/iris/infer", json=bad_shape),
        422,
        r"input 'input' has shape \[1, 3\]; expected",
    )
    bad_type = {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]
    }
    error(post(f"{server}/v2/models/iris/infer", json=bad_type), 422, r"input 'input' has datatype 'BYTES'")
    bad_count = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    error(
        post(f"{server}/v2/models/iris/infer", json=bad_count), 422, r"input 'input' has 4 values but shape"
    )
    error(
        post(f"{server}/predictions/iris", json=[[1.0, 2.0, 3.0, 4.0]] * 2000),
        413,
        r"exceeds the limit of 20000 bytes.*--max-body",
    )
    nan = b"[[NaN, 3.5, 1.4, 0.2]]"
    error(
        post(f"{server}/predictions/iris", content=nan),
        422,
        r"^model iris/1: instance 0, field sepal_length is NaN; expected a finite number$",
    )
    error(httpx.get(f"{server}/nowhere"), 404, r"GET /nowhere: Not Found")
    assert httpx.get(f"{server}/ping").json() == {"status": "Healthy"}
    ok = post(f"{server}/predictions/iris", json=list(IRIS.data[100]))
    assert ok.json()["predictions"] == expected(svc, IRIS.data[100:101])


def metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


def test_200_concurrent_requests_are_batched_and_answered_correctly(server: str, svc: object) -> None:
    rows = IRIS.data[np.arange(200) % len(IRIS.data)]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=30) as client:
            calls = [client.post("/predictions/iris", json=list(row)) for row in rows]
            return await asyncio.gather(*calls)

    before = httpx.get(f"{server}/metrics").text
    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["predictions"][0] for r in responses] == expected(svc, rows)
    text = httpx.get(f"{server}/metrics").text
    batches = metric(text, "inferline_batch_size_count", 'model="iris"') - metric(
        before, "inferline_batch_size_count", 'model="iris"'
    )
    singles = metric(text, "inferline_batch_size_bucket", 'le="1.0",model="iris"') - metric(
        before, "inferline_batch_size_bucket", 'le="1.0",model="iris"'
    )
    assert batches < 200 and singles < batches, (batches, singles)  # some batches held > 1 row
    assert metric(text, "inferline_requests_total", 'model="iris",status="200"') >= 200
    assert metric(text, "inferline_queue_depth", 'model="iris"') == 0
    assert metric(text, "inferline_model_version_loaded", 'default="true",model="iris",version="1"') == 1
    assert "inferline_request_latency_seconds_bucket" in text
