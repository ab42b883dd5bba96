"""The inference port's own HTTP protocol (`serve/protocol.py`) over raw sockets: pipelined
requests answered in order (predictions, app routes and errors mixed), chunked bodies,
`Expect: 100-continue`, the body limit, HTTP/1.0, and a client closing mid-body."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.e2e.server import running_server

IRIS = load_iris()
MAX_BODY = 2000
ROWS = IRIS.data[[0, 60, 120]].tolist()
BODY = json.dumps(ROWS).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_example: Path) -> Iterator[str]:
    store = tmp_path_factory.mktemp("protocol") / "store"
    ModelStore(str(store)).add("iris", str(iris_example / "models/iris-1.joblib"), inputs=FEATURES)
    with running_server(store, "--max-body", str(MAX_BODY), "--watch-interval", "0") as base:
        yield base


@pytest.fixture(scope="module")
def expected(iris_example: Path) -> list[int]:
    svc = joblib.load(iris_example / "models/iris-1.joblib")
    return [int(v) for v in svc.predict(ROWS)]


class Connection:
    """A raw HTTP/1.1 client connection that reads answers one at a time."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before an answer: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def read(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.read_head()
        size = int(headers["content-length"])
        while len(self.buffer) < size:
            assert self._fill(), "connection closed inside an answer"
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        return not self.buffer and not self._fill()

    def close(self) -> None:
        self.sock.close()


def post(path: str, body: bytes, *, version: str = "1.1", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: test\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def chunked(path: str, pieces: list[bytes]) -> bytes:
    head = f"PUT {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + body


def metric(base: str, name: str, labels: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{name}{{{re.escape(labels)}}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_pipelined_requests_are_answered_in_order(server: str, expected: list[int]) -> None:
    conn = Connection(server)
    try:
        conn.send(
            post("/predictions/iris", BODY)
            + b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"
            + post("/predictions/iris/1", b"[[1, 2")
            + post("/predictions/nope", BODY)
            + post("/predictions/iris/1?ignored=1", json.dumps({"instances": ROWS[:1]}).encode())
        )
        answers = [conn.read() for _ in range(5)]
    finally:
        conn.close()
    status, headers, body = answers[0]
    assert (status, headers["x-model-id"]) == (200, "iris/1")
    assert json.loads(body) == {"model_id": "iris/1", "predictions": expected}
    assert answers[1][0] == 200 and json.loads(answers[1][2]) == {"status": "Healthy"}
    assert answers[2][0] == 400 and json.loads(answers[2][2])["type"] == "BadRequestException"
    assert answers[3][0] == 404 and json.loads(answers[3][2])["type"] == "ModelNotFoundException"
    assert answers[4][0] == 200 and json.loads(answers[4][2])["predictions"] == expected[:1]


def test_chunked_body_sent_in_pieces(server: str, expected: list[int]) -> None:
    conn = Connection(server)
    try:
        message = chunked("/predictions/iris", [BODY[:7], BODY[7:30], BODY[30:]])
        conn.send(message[:-40])  # the server waits for the rest of the body
        time.sleep(0.05)
        conn.send(message[-40:])
        status, _, body = conn.read()
        assert status == 200 and json.loads(body)["predictions"] == expected
        # The connection stays open for the next request.
        conn.send(chunked("/predictions/iris", [BODY]))
        assert json.loads(conn.read()[2])["predictions"] == expected
    finally:
        conn.close()


def test_expect_100_continue_and_the_body_limit(server: str, expected: list[int]) -> None:
    conn = Connection(server)
    try:
        head = post("/predictions/iris", BODY, extra="Expect: 100-continue\r\n")
        conn.send(head[: -len(BODY)])
        assert conn.read_head()[0] == 100  # only then the body
        conn.send(BODY)
        status, _, body = conn.read()
        assert status == 200 and json.loads(body)["predictions"] == expected
        # A declared body over --max-body: 413 at once, no 100 Continue, the connection kept.
        big = b"[" + b"1," * MAX_BODY + b"1]"
        conn.send(post("/predictions/iris", big, extra="Expect: 100-continue\r\n")[: -len(big)])
        status, _, body = conn.read()
        assert status == 413 and json.loads(body)["type"] == "PayloadTooLarge"
        assert f"exceeds the limit of {MAX_BODY} bytes" in json.loads(body)["message"]
        conn.send(big)  # sent anyway: read and dropped
        conn.send(post("/predictions/iris", BODY))
        assert conn.read()[0] == 200
        # A chunked body has no declared size: 413 once the chunks pass the limit.
        conn.send(chunked("/predictions/iris", [big[:1500], big[1500:]]))
        assert conn.read()[0] == 413
    finally:
        conn.close()


def test_http_1_0_answer_closes_the_connection(server: str, expected: list[int]) -> None:
    conn = Connection(server)
    try:
        conn.send(post("/predictions/iris", BODY, version="1.0"))
        status, headers, body = conn.read()
        assert status == 200 and json.loads(body)["predictions"] == expected
        assert headers["connection"] == "close"
        assert conn.closed_by_server()
    finally:
        conn.close()


def test_client_closing_mid_body_is_counted_and_the_server_keeps_serving(
    server: str, expected: list[int]
) -> None:
    gone = 'model="iris",status="499"'
    before = metric(server, "inferline_requests_total", gone)
    conn = Connection(server)
    conn.send(post("/predictions/iris", BODY)[:-10])
    conn.close()
    deadline = time.monotonic() + 30
    while metric(server, "inferline_requests_total", gone) == before:
        assert time.monotonic() < deadline, "the abandoned request was never counted"
        time.sleep(0.05)
    answer = httpx.post(f"{server}/predictions/iris", content=BODY)
    assert answer.status_code == 200 and answer.json()["predictions"] == expected
    assert metric(server, "inferline_requests_total", 'model="iris",status="500"') == 0
