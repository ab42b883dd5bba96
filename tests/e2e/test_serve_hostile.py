"""`inferline serve` under hostile input, over real sockets: every bad value a 4xx with a JSON
body naming it, model NaN outputs as null, everything counted, and no request stalls /ping.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.e2e.server import running_server
from tests.unit.serve.test_protocols import png_header

IRIS = load_iris()
BATCH_SIZE = 1024
ROWS = 400_000
PING_BUDGET_S = 0.5  # p99; the issue saw 4-5 s freezes. Generous: the CI machine is shared.


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, iris_example: Path) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    models = ModelStore(str(root / "store"))
    models.add("iris", str(iris_example / "models/iris-1.joblib"), inputs=FEATURES)
    gbt = HistGradientBoostingClassifier(max_iter=10).fit(IRIS.data, IRIS.target)
    joblib.dump(gbt, root / "gbt.joblib")
    models.add("gbt", str(root / "gbt.joblib"), inputs=FEATURES, metadata={"allow_missing": True})
    # Overflows to +Infinity when sepal_length > 0: a model whose output JSON cannot carry.
    overflowing = LinearRegression().fit(IRIS.data, IRIS.data[:, 0])
    overflowing.coef_ = np.array([1e308, 1e308, 0.0, 0.0])
    overflowing.intercept_ = 0.0
    joblib.dump(overflowing, root / "overflow.joblib")
    models.add("overflow", str(root / "overflow.joblib"), inputs=FEATURES)
    linear = LinearRegression().fit(IRIS.data, IRIS.target.astype(float))
    joblib.dump(linear, root / "linear.joblib")
    models.add("linear", str(root / "linear.joblib"), inputs=FEATURES)  # cheap, no scores
    models.add("pics", str(root / "gbt.joblib"), metadata={"resize": [8, 8], "mode": "L"})
    return root / "store"


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[str]:
    options = ("--batch-size", str(BATCH_SIZE), "--max-image-pixels", "1000000", "--watch-interval", "0")
    with running_server(store, *options) as base:
        yield base


def ping_p99(base: str, samples: int = 50) -> float:
    with httpx.Client(base_url=base, timeout=30) as client:
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            assert client.get("/ping").status_code == 200
            times.append(time.perf_counter() - start)
    return float(np.percentile(times, 99))


ROW = "[5.1, 3.5, 1.4, 0.2]"
HUGE_INT = "1" + "0" * 5000
TSP = "/predictions/iris"
V2 = "/v2/models/iris/infer"


def v2(datatype: str, data: str, shape: str = "[1, 4]", name: str = "input") -> str:
    return f'{{"inputs": [{{"name": "{name}", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'


HOSTILE = [
    (
        TSP,
        "[[NaN, 3.5, 1.4, 0.2]]",
        422,
        r"^model iris/1: instance 0, field sepal_length is NaN; expected a finite",
    ),
    (TSP, "[[5.1, Infinity, 1.4, 0.2]]", 422, r"instance 0, field sepal_width is Infinity"),
    (TSP, "[[5.1, 3.5, -Infinity, 0.2]]", 422, r"instance 0, field petal_length is -Infinity"),
    (
        TSP,
        f"[{ROW}, [5.1, 3.5, 1.4, 1e999]]",
        422,
        r"instance 1, field petal_width is Infinity \(or a number too",
    ),
    (
        TSP,
        "[[5.1, 3.5, null, 0.2]]",
        422,
        r"instance 0, field petal_length is null; expected a finite number",
    ),
    (
        TSP,
        '[{"sepal_length": 5.1, "sepal_width": null, "petal_length": 1.4, "petal_width": 0.2}]',
        422,
        r"instance 0, field sepal_width is null",
    ),
    (TSP, "[" * 10000 + "]" * 10000, 400, r"JSON nested 10000 levels deep; at most 64 allowed"),
    (TSP, '{"a": ' * 10000 + "1" + "}" * 10000, 400, r"JSON nested 10000 levels deep"),
    (TSP, f"[[5.1, 3.5, 1.4, {HUGE_INT}]]", 422, r"a value in the body cannot be read \(Exceeds the limit"),
    (TSP, f"[[5.1, 3.5, 1.4, 1{'0' * 400}]]", 422, r"field petal_width is an integer of 401 digits"),
    (TSP, '[["5.1", 3.5, 1.4, 0.2]]', 422, r"instance 0, field sepal_length is the string '5.1'"),
    (TSP, "[[true, 3.5, 1.4, 0.2]]", 422, r"instance 0, field sepal_length is true \(a boolean\)"),
    (TSP, "[5.1, 3.5, false, 0.2]", 422, r"instance 0, field petal_length is false \(a boolean\)"),
    (TSP, '{"instances": [[5.1, 3.5, 1.4, [0.2]]]}', 422, r"must be numbers of shape \[-1, 4\]"),
    (
        V2,
        v2("INT8", "[500, 1, 2, 3]"),
        422,
        r"input 'input' value \[0\] is 500, outside INT8's range -128..127",
    ),
    (V2, v2("UINT8", "[5, -5, 2, 3]"), 422, r"value \[1\] is -5, outside UINT8's range 0..255"),
    (V2, v2("INT64", f"[5, 3, 1, {HUGE_INT}]"), 422, r"cannot be read \(Exceeds the limit \(4300 digits\)"),
    (V2, v2("INT64", "[5.1, 3.5, 1.4, 0.2]"), 422, r"value \[0\] is 5.1; expected a whole number \(INT64\)"),
    (V2, v2("FP32", "[5.1, NaN, 1.4, 0.2]"), 422, r"value \[1\] is NaN; expected a finite number"),
    (V2, v2("FP64", '[5.1, "3.5", 1.4, 0.2]'), 422, r"value \[1\] is the string '3.5'"),
    (V2, v2("FP64", "[5.1, true, 1.4, 0.2]"), 422, r"value \[1\] is true \(a boolean\)"),
    (V2, v2("FP16", "[5.1, 3.5, 1.4, 1e10]"), 422, r"value \[3\] is 10000000000.0, too large for FP16"),
    (
        V2,
        '{"inputs": ['
        + ", ".join(
            f'{{"name": "{n}", "shape": [1], "datatype": "FP64", "data": [1]}}' for n in [*FEATURES, "x"]
        )
        + "]}",
        400,
        r"unknown inputs 'x'; expected sepal_length, sepal_width, petal_length, petal_width",
    ),
    (V2, v2("FP64", "[" * 100 + "1" + "]" * 100), 400, r"JSON nested 103 levels deep"),
]


def test_every_hostile_request_is_a_4xx_naming_the_value(server: str) -> None:
    before = metrics_of(server)
    with httpx.Client(base_url=server, timeout=30) as client:
        for path, body, code, pattern in HOSTILE:
            answer = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
            assert answer.status_code == code, (body[:80], answer.text[:300])
            error = answer.json()
            if path.startswith("/v2/"):  # the Open Inference Protocol's error body
                assert set(error) == {"error"}
                message = error["error"]
            else:
                assert set(error) == {"code", "type", "message"} and error["code"] == code
                message = error["message"]
            assert re.search(pattern, message), (pattern, message)
            assert client.get("/ping", timeout=PING_BUDGET_S * 4).status_code == 200
    assert ping_p99(server) < PING_BUDGET_S

    # Every one of them is counted for the model, in /metrics and on the dashboard.
    after = metrics_of(server)
    for code in (400, 422):
        sent = sum(1 for _, _, c, _ in HOSTILE if c == code)
        key = f'inferline_requests_total{{model="iris",status="{code}"}}'
        assert after.get(key, 0) - before.get(key, 0) == sent, key
    stats = httpx.get(f"{server}/dashboard/stats").json()
    assert stats["models"]["iris"]["errors"] >= len(HOSTILE)


def metrics_of(base: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_an_image_over_max_image_pixels_is_a_413(server: str) -> None:
    answer = httpx.post(
        f"{server}/predictions/pics", content=png_header(2000, 1000), headers={"content-type": "image/png"}
    )
    assert answer.status_code == 413
    assert answer.json()["message"] == (
        "model pics/1: image of 2000x1000 pixels (2.0 Mpx) exceeds the limit of 1000000 pixels; "
        "send a smaller image or start the server with a larger --max-image-pixels"
    )
    assert ping_p99(server, samples=10) < PING_BUDGET_S


def test_a_model_that_declares_missing_values_gets_nan(server: str) -> None:
    nan_row = "[[NaN, 3.5, null, 0.2]]"
    answer = httpx.post(f"{server}/predictions/gbt", content=nan_row, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] in ([0], [1], [2])
    infinite = httpx.post(f"{server}/predictions/gbt", content="[[Infinity, 3.5, 1.4, 0.2]]", timeout=30)
    assert infinite.status_code == 422 and "field sepal_length is Infinity" in infinite.json()["message"]


def test_non_finite_model_outputs_are_null_with_a_warning(server: str) -> None:
    rows = [[0.0, 0.0, 1.4, 0.2], [5.1, 3.5, 1.4, 0.2]]
    answer = httpx.post(f"{server}/predictions/overflow", json=rows, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [0.0, None]
    assert answer.headers["x-inferline-warning"] == (
        "model overflow/1 output 1 non-finite values (NaN/Infinity), sent as null"
    )
    tensor = {"name": "input", "shape": [2, 4], "datatype": "FP64", "data": sum(rows, [])}
    v2_answer = httpx.post(f"{server}/v2/models/overflow/infer", json={"inputs": [tensor]}, timeout=30)
    assert v2_answer.status_code == 200 and v2_answer.json()["outputs"][0]["data"] == [0.0, None]


def test_a_huge_body_stalls_no_other_request(server: str, store: Path) -> None:
    rng = np.random.default_rng(0)
    # The 12 MB / 700k rows froze /ping for 5 s; 400k rows (~10 MB) freeze the old code
    # for well over the budget even on an idle machine.
    rows = np.round(rng.uniform(0.1, 8, size=(ROWS, 4)), 2)
    torchserve = json.dumps(rows.tolist()).encode()
    tensor = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.reshape(-1).tolist(),
    }
    v2 = json.dumps({"inputs": [tensor]}).encode()
    before = metrics_of(server)
    answers: list[httpx.Response] = []
    busy = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=server, timeout=120) as client:
            busy.set()
            try:
                answers.append(client.post("/predictions/linear", content=torchserve))
                answers.append(client.post("/v2/models/linear/infer", content=v2))
            finally:
                busy.clear()

    sender = threading.Thread(target=send)
    sender.start()
    busy.wait(10)
    during: list[float] = []
    scrapes: list[float] = []
    with httpx.Client(base_url=server, timeout=30) as client:
        while busy.is_set():
            for path, times in (("/ping", during), ("/metrics", scrapes)):
                start = time.perf_counter()
                assert client.get(path).status_code == 200
                times.append(time.perf_counter() - start)
            time.sleep(0.01)
    sender.join()
    for name, times in (("/ping", during), ("/metrics", scrapes)):
        print(
            f"{len(times)} {name} during: p50 {np.median(times):.4f} s, p99 {np.percentile(times, 99):.4f} s"
        )
    assert float(np.percentile(during, 99)) < PING_BUDGET_S, sorted(during)[-5:]
    assert float(np.percentile(scrapes, 99)) < PING_BUDGET_S, sorted(scrapes)[-5:]
    # How many pings fit depends on how fast the big requests finish (fewer on a quick machine);
    # a handful is enough for the p99 above, which is what catches a stalled event loop.
    assert len(during) >= 5, f"only {len(during)} pings ran while the big requests did"
    assert ping_p99(server) < PING_BUDGET_S

    linear = joblib.load(store.parent / "linear.joblib")
    want = linear.predict(rows)
    assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
    np.testing.assert_allclose(answers[0].json()["predictions"], want)
    np.testing.assert_allclose(answers[1].json()["outputs"][0]["data"], want)
    # The requests were split into model calls of --batch-size rows.
    after = metrics_of(server)
    count, total = 'inferline_batch_size_count{model="linear"}', 'inferline_batch_size_sum{model="linear"}'
    calls = after[count] - before.get(count, 0)
    assert calls >= len(answers) * ROWS / BATCH_SIZE
    assert (after[total] - before.get(total, 0)) / calls <= BATCH_SIZE
