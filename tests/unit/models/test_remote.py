"""RemoteHandler against a small real HTTP server: batching, retries, timeouts, auth, failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from inferline.engine.predict import run_model
from inferline.errors import ModelError, RemoteUnavailable
from inferline.models.base import LoadedModel
from inferline.models.remote import RemoteHandler, RemoteRequestFailed, parse_url
from tests.conftest import free_port

SECRET = "s3cret-token-value"


@dataclass
class Behaviour:
    """What the fake KServe/TorchServe server does; it records what it saw."""

    fail_first: int = 0  # answer 503 to this many infer requests first
    status_for_negative: int = 500  # answer this when a row has a negative value
    delay: float = 0.0
    headers: list[str | None] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_server(behaviour: Behaviour) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            behaviour.headers.append(self.headers.get("authorization"))
            if self.path == "/v2/models/summer":
                self._answer(200, {"name": "summer", "versions": ["6", "7"], "platform": "test"})
            elif self.path == "/ping":
                self._answer(200, {"status": "Healthy"})
            else:
                self._answer(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            behaviour.headers.append(self.headers.get("authorization"))
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with behaviour.lock:
                behaviour.in_flight += 1
                behaviour.max_in_flight = max(behaviour.max_in_flight, behaviour.in_flight)
            try:
                time.sleep(behaviour.delay)
                with behaviour.lock:
                    if behaviour.fail_first > 0:
                        behaviour.fail_first -= 1
                        self._answer(503, {"error": "busy"})
                        return
                if self.path == "/v2/models/summer/infer":
                    tensor = body["inputs"][0]
                    rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
                elif self.path == "/predictions/summer":
                    rows = np.asarray(body["instances"], dtype=np.float64)
                else:
                    self._answer(404, {"error": "no such model"})
                    return
                behaviour.sizes.append(len(rows))
                if (rows < 0).any():
                    self._answer(behaviour.status_for_negative, {"error": "negative input"})
                    return
                sums = rows.sum(axis=1)
                if self.path.startswith("/v2"):
                    outputs = [
                        {
                            "name": "predictions",
                            "datatype": "FP64",
                            "shape": [len(rows)],
                            "data": sums.tolist(),
                        },
                        {
                            "name": "scores",
                            "datatype": "FP64",
                            "shape": list(rows.shape),
                            "data": rows.ravel().tolist(),
                        },
                    ]
                    self._answer(200, {"model_name": "summer", "model_version": "7", "outputs": outputs})
                else:
                    self._answer(200, {"predictions": sums.tolist()})
            finally:
                with behaviour.lock:
                    behaviour.in_flight -= 1

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def served() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    server = make_server(behaviour)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def handler() -> Iterator[RemoteHandler]:
    made = RemoteHandler(batch_size=10, timeout=2, retries=2, backoff=0.01, concurrency=3)
    try:
        yield made
    finally:
        made.close()


ROWS = np.arange(64, dtype=np.float64).reshape(32, 2)


def test_parse_url_kinds() -> None:
    assert parse_url("http://h:1/v2/models/iris") == ("v2", "http://h:1", "iris", None)
    assert parse_url("https://h/pre/v2/models/iris/versions/3") == ("v2", "https://h/pre", "iris", "3")
    assert parse_url("http://h:1/predictions/iris/2") == ("torchserve", "http://h:1", "iris", "2")
    with pytest.raises(ModelError, match=r"model http://h:1/other: cannot tell the protocol from the path"):
        parse_url("http://h:1/other")
    with pytest.raises(ModelError, match=r"url must be http\(s\)://host:port/v2/models/NAME"):
        parse_url("ftp://h/v2/models/x")
    with pytest.raises(ModelError, match=r"protocol 'torchserve' does not match the URL path \(v2\)"):
        parse_url("http://h:1/v2/models/iris", "torchserve")


def test_v2_batches_split_and_run_concurrently(served: tuple[str, Behaviour], handler: RemoteHandler) -> None:
    base, behaviour = served
    behaviour.delay = 0.05
    model = handler.load(f"{base}/v2/models/summer")
    assert model.version == "7"  # the newest version the server lists
    prediction = handler.predict(model, ROWS)
    assert prediction.prediction.tolist() == ROWS.sum(axis=1).tolist()
    assert prediction.scores is not None and prediction.scores.tolist() == ROWS.tolist()
    assert sorted(behaviour.sizes) == [2, 10, 10, 10]
    assert 1 < behaviour.max_in_flight <= 3
    assert len(handler.predict(model, ROWS[:0]).prediction) == 0 and len(behaviour.sizes) == 4


def test_torchserve_protocol(served: tuple[str, Behaviour], handler: RemoteHandler) -> None:
    base, behaviour = served
    model = handler.load(f"{base}/predictions/summer")
    assert model.protocol == "torchserve" and model.version == "remote"
    assert handler.predict(model, ROWS[:5]).prediction.tolist() == ROWS[:5].sum(axis=1).tolist()


def test_retries_5xx_with_backoff(served: tuple[str, Behaviour], handler: RemoteHandler) -> None:
    base, behaviour = served
    model = handler.load(f"{base}/v2/models/summer")
    behaviour.fail_first = 2
    assert handler.predict(model, ROWS[:4]).prediction.tolist() == ROWS[:4].sum(axis=1).tolist()
    assert behaviour.fail_first == 0 and behaviour.sizes == [4]
    behaviour.fail_first = 5
    with pytest.raises(
        RemoteUnavailable,
        match=r"POST http://127\.0\.0\.1:\d+/v2/models/summer/infer failed "
        r"after 3 attempts: HTTP 503: busy",
    ):
        handler.predict(model, ROWS[:4])


def test_auth_header_from_environment_never_in_messages(
    served: tuple[str, Behaviour], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, behaviour = served
    handler = RemoteHandler(auth_env="SUMMER_TOKEN", retries=0)
    with pytest.raises(ModelError, match=r"environment variable SUMMER_TOKEN \(auth_env\) is not set"):
        handler.load(f"{base}/v2/models/summer")
    monkeypatch.setenv("SUMMER_TOKEN", SECRET)
    try:
        model = handler.load(f"{base}/v2/models/summer")
        handler.predict(model, ROWS[:2])
        assert set(behaviour.headers) == {f"Bearer {SECRET}"}
        with pytest.raises(RemoteRequestFailed) as failed:
            handler.predict(model, -ROWS[:2])
        assert SECRET not in str(failed.value) and "HTTP 500: negative input" in str(failed.value)
    finally:
        handler.close()


def test_credentials_in_url_are_not_shown(served: tuple[str, Behaviour]) -> None:
    base, _ = served
    handler = RemoteHandler(retries=0)
    try:
        with pytest.raises(RemoteUnavailable) as failed:
            handler.load(base.replace("http://", "http://user:pw@") + "/v2/models/nothere?key=abc")
        assert "pw" not in str(failed.value) and "abc" not in str(failed.value)
        assert "GET http://127.0.0.1:" in str(failed.value) and "HTTP 404" in str(failed.value)
    finally:
        handler.close()


def test_timeout_is_unavailable(served: tuple[str, Behaviour]) -> None:
    base, behaviour = served
    handler = RemoteHandler(timeout=0.2, retries=1, backoff=0.01)
    try:
        model = handler.load(f"{base}/v2/models/summer")
        behaviour.delay = 0.5
        with pytest.raises(RemoteUnavailable, match=r"failed after 2 attempts: no answer within 0\.2 s"):
            handler.predict(model, ROWS[:2])
    finally:
        handler.close()


def test_server_down_fails_fast(handler: RemoteHandler) -> None:
    url = f"http://127.0.0.1:{free_port()}/v2/models/summer"
    with pytest.raises(
        RemoteUnavailable,
        match=r"GET http://127\.0\.0\.1:\d+/v2/models/summer failed after 3 "
        r"attempts: cannot connect \(ConnectError\)",
    ):
        handler.load(url)


def test_pipeline_model_on_a_down_server_names_the_model() -> None:
    from inferline.models.registry import load_model
    from inferline.pipeline import ModelSpec

    spec = ModelSpec(name="lr", url=f"http://127.0.0.1:{free_port()}/v2/models/lr", retries=0)
    with pytest.raises(
        ModelError,
        match=r"^model lr: GET http://127\.0\.0\.1:\d+/v2/models/lr failed: cannot "
        r"connect \(ConnectError\); check that the server is up and the URL is right$",
    ):
        load_model(spec)


def loaded(handler: RemoteHandler, url: str) -> LoadedModel:
    model = handler.load(url)
    return LoadedModel("summer", model.version, url, handler, model, inputs=["a", "b"])


def test_engine_bisects_bad_rows_but_not_a_dead_server(
    served: tuple[str, Behaviour], handler: RemoteHandler
) -> None:
    base, behaviour = served
    model = loaded(handler, f"{base}/v2/models/summer")
    data = pa.record_batch({"a": ROWS[:8, 0], "b": ROWS[:8, 1]})
    data = data.set_column(0, "a", pa.array([0, 2, -4, 6, 8, 10, 12, 14], pa.float64()))
    keys = pa.array([str(i) for i in range(8)])
    out = run_model(model, None, data, keys)
    assert out.rows.tolist() == [0, 1, 3, 4, 5, 6, 7]
    assert [d.key for d in out.dead] == ["2"]
    assert "HTTP 500: negative input" in out.dead[0].error and out.dead[0].model_id == "summer/7"

    behaviour.fail_first = 1000  # the server now refuses everything
    calls = len(behaviour.headers)
    out = run_model(model, None, data, keys)
    assert len(out.rows) == 0 and [d.key for d in out.dead] == [str(i) for i in range(8)]
    assert {d.error for d in out.dead} == {
        f"model summer/7: POST {base}/v2/models/summer/infer failed after 3 attempts: HTTP 503: busy"
    }
    assert len(behaviour.headers) - calls == 3  # one batch, retried; never bisected


def test_spec_keys_for_remote_models() -> None:
    from inferline.errors import SpecError
    from inferline.pipeline import parse_spec

    raw: dict[str, Any] = {
        "source": {"kind": "csv", "path": "x.csv"},
        "models": [{"name": "r", "url": "http://h:1/v2/models/r", "inputs": ["a"]}],
        "sink": {"kind": "jsonl", "path": "out.jsonl"},
        "batch": {"max_size": 64},
    }
    model = parse_spec(raw).all_models[0]
    assert (model.framework, model.max_batch, model.retries, model.concurrency) == ("remote", 64, 3, 4)
    raw["models"][0]["protocol"] = "grpc"
    with pytest.raises(SpecError, match=r"model 'r': protocol must be v2 or torchserve, got 'grpc'"):
        parse_spec(raw)
    raw["models"][0].update(protocol=None, watch=True)
    with pytest.raises(
        SpecError, match=r"model 'r': watch: needs uri: or store:; a url: model is what its server"
    ):
        parse_spec(raw)
