"""TorchServe and v2 body parsing in-process: every 400/422 message, and the accepted shapes."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.examples.iris import FEATURES
from inferline.models.base import LoadedModel
from inferline.models.sklearn import SklearnHandler
from inferline.serve.app import create_app
from inferline.serve.state import ServerConfig, ServerState

IRIS = load_iris()


@pytest.fixture(scope="module")
def state() -> ServerState:
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    server = ServerState(ServerConfig())
    handler = SklearnHandler()
    server.models.add(LoadedModel("iris", "1", "mem://iris", handler, model, inputs=list(FEATURES)))
    bare = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    server.models.add(LoadedModel("bare", "3", "mem://bare", handler, bare))
    return server


def call(state: ServerState, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


CASES = [
    ("/predictions/iris", b"", 400, r"POST /predictions/iris: empty request body; expected JSON"),
    ("/predictions/iris", {"instances": 5}, 400, r"'instances' must be a list, got int"),
    (
        "/predictions/iris",
        "text",
        400,
        r"expected a JSON list, an object or \{\"instances\": \[...\]\}, got str",
    ),
    (
        "/predictions/iris",
        [dict.fromkeys(FEATURES, 1.0), [1, 2]],
        400,
        r"instance 1 is not an object like the others",
    ),
    ("/predictions/bare", [{"a": 1}], 422, r"instance 0 has named fields but the model has no input names"),
    ("/predictions/iris", {"instances": []}, 422, r"input 'instances' is empty; send at least one row"),
    ("/predictions/iris", [[1, 2], [1, 2, 3]], 422, r"input 'instances' must be numbers of shape \[-1, 4\]"),
    ("/v2/models/iris/infer", {"inputs": [{"name": "x"}]}, 400, r"input 'x' lacks shape, datatype, data"),
    ("/v2/models/iris/infer", {"inputs": [5]}, 400, r"each input must be an object with name, shape"),
    (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "shape": "4", "datatype": "FP32", "data": [1]}]},
        400,
        r"input 'x' shape must be a list of sizes, got '4'",
    ),
    (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]},
        422,
        r"model iris/1: input 'input' value \[0\] is the string 'a'; expected a finite number",
    ),
    (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2},
        400,
        r"unknown inputs 'x'; expected sepal_length, sepal_width, petal_length, petal_width \(one \[n\] "
        r"tensor each\), or one tensor 'input' of shape \[-1, 4\]",
    ),
    (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        400,
        r"model iris/1: unknown inputs 'x'; expected sepal_length, .*, or one tensor 'input' of shape",
    ),
    (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP9", "data": [1, 2, 3, 4]}]},
        400,
        r"input 'input' has datatype 'FP9'; expected one of BOOL, UINT8",
    ),
    (
        "/v2/models/iris/infer",
        {
            "inputs": [
                {
                    "name": n,
                    "shape": [1 + (n == "petal_width")],
                    "datatype": "FP32",
                    "data": [1] * (1 + (n == "petal_width")),
                }
                for n in FEATURES
            ]
        },
        422,
        r"per-feature inputs must all have shape \[n\] with the same n",
    ),
    (
        "/v2/models/iris/infer",
        {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "logits"}],
        },
        400,
        r"unknown outputs \['logits'\]; expected predictions, scores",
    ),
]


def v2(datatype: str, data: Any, shape: list[int] | None = None, name: str = "input") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape or [1, 4], "datatype": datatype, "data": data}]}


V2_CASES = [
    (v2("INT8", [500, 1, 2, 3]), r"input 'input' value \[0\] is 500, outside INT8's range -128..127"),
    (v2("UINT8", [1, -5, 2, 3]), r"input 'input' value \[1\] is -5, outside UINT8's range 0..255"),
    (v2("INT64", [1, 2.7, 2, 3]), r"value \[1\] is 2.7; expected a whole number \(INT64\), or declare"),
    (v2("INT64", [1, 2, 3, 10**30]), r"value \[3\] is an integer of 31 digits, outside INT64's range"),
    (v2("FP32", [1, 2, 3, 1e39]), r"value \[3\] is 1e\+39, too large for FP32 \(at most 3.403e\+38\)"),
    (v2("FP64", [1, None, 3, 4]), r"value \[1\] is null; expected a finite number"),
    (v2("FP64", [[1, 2], [3, True]], [1, 4]), r"value \[1, 1\] is true \(a boolean\); expected a finite"),
    (v2("FP64", [1, "2", 3, 4]), r"value \[1\] is the string '2'; expected a finite number"),
    (v2("FP64", [[1, 2], [3]]), r"input 'input' data is not a regular FP64 array"),
    (v2("BOOL", [True, 1, False, True]), r"value \[1\] is 1; expected true or false \(BOOL\)"),
    (v2("FP64", 5), r"input 'input' data must be a list, got int"),
    (v2("FP64", [], [0, 4]), r"input 'input' has no rows \(shape \[0, 4\]\)"),
    (v2("FP64", [1, 2, 3, 4], [1, 4], "sepal_length"), r"missing inputs sepal_width, petal_length"),
]


@pytest.mark.parametrize(("body", "pattern"), V2_CASES)
def test_v2_values_that_do_not_fit_their_datatype_are_422(
    state: ServerState, body: dict[str, Any], pattern: str
) -> None:
    response = call(state, "POST", "/v2/models/iris/infer", json=body)
    code = 400 if "missing inputs" in pattern else 422
    assert response.status_code == code, response.text
    assert re.search(pattern, message_of(response)), response.text


def test_v2_an_unknown_input_name_names_the_expected_ones(state: ServerState) -> None:
    inputs = [{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in [*FEATURES, "bogus"]]
    response = call(state, "POST", "/v2/models/iris/infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "model iris/1: unknown inputs 'bogus'; expected sepal_length, sepal_width, petal_length, "
        "petal_width (one [n] tensor each), or one tensor 'input' of shape [-1, 4]"
    )
    ints = call(state, "POST", "/v2/models/iris/infer", json=v2("INT64", [5, 3, 1, 0]))
    assert ints.status_code == 200 and ints.json()["outputs"][0]["data"] == [0]
    whole_floats = call(state, "POST", "/v2/models/iris/infer", json=v2("INT8", [5.0, 3.0, 1.0, 0.0]))
    assert whole_floats.status_code == 200


@pytest.mark.parametrize(("path", "body", "code", "pattern"), CASES)
def test_bad_bodies_get_json_errors(
    state: ServerState, path: str, body: Any, code: int, pattern: str
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = call(state, "POST", path, **kwargs)
    assert response.status_code == code, response.text
    assert re.search(pattern, message_of(response)), response.text


def message_of(response: httpx.Response) -> str:
    """The error message: v2 routes answer `{"error"}`, the others `{"code", "type", "message"}`."""
    body = response.json()
    if response.url.path.startswith("/v2"):
        assert set(body) == {"error"}, body
        return str(body["error"])
    assert body["code"] == response.status_code
    return str(body["message"])


def test_v2_outputs_can_be_chosen_and_scores_come_back(state: ServerState) -> None:
    tensor = {"name": "input", "shape": [4], "datatype": "FP64", "data": list(IRIS.data[0])}
    answer = call(
        state, "POST", "/v2/models/iris/infer", json={"inputs": [tensor], "outputs": [{"name": "scores"}]}
    )
    [scores] = answer.json()["outputs"]
    assert scores["name"] == "scores" and scores["datatype"] == "FP64" and scores["shape"] == [1, 3]
    assert abs(sum(scores["data"]) - 1) < 1e-9


def test_management_without_a_store_says_so(state: ServerState) -> None:
    response = call(state, "POST", "/models", params={"url": "x.onnx", "model_name": "x"})
    assert response.status_code == 400
    assert response.json()["message"] == "this server has no model store; start it with --models STORE"
    bad = call(state, "POST", "/models", params={"url": "x.onnx"})
    assert bad.json()["message"] == "POST /models: missing ?model_name=NAME"
    size = call(state, "POST", "/models", params={"url": "x.onnx", "model_name": "x", "batch_size": "0"})
    assert size.json()["message"] == "POST /models: batch_size='0'; expected a positive whole number"


def test_server_metadata_and_unknown_routes(state: ServerState) -> None:
    assert call(state, "GET", "/v2").json()["name"] == "inferline"
    missing = call(state, "GET", "/v2/models/roses/ready")
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'roses' is not served; have bare, iris"}
    wrong_method = call(state, "GET", "/predictions/iris")
    assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "MethodNotAllowedException"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` RGB pixels (its pixel data is never reached)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_an_image_over_max_image_pixels_is_refused_before_decoding() -> None:
    pytest.importorskip("PIL")
    handler = SklearnHandler()
    model = LogisticRegression(max_iter=200).fit(IRIS.data[:, :1].repeat(64, axis=1), IRIS.target)
    server = ServerState(ServerConfig())
    server.models.add(
        LoadedModel("pics", "1", "mem://pics", handler, model, metadata={"resize": [8, 8], "mode": "L"})
    )
    bomb = call(server, "POST", "/predictions/pics", content=png_header(13000, 13000), headers=IMAGE)
    assert bomb.status_code == 413
    assert bomb.json()["message"] == (
        "model pics/1: image of 13000x13000 pixels (169.0 Mpx) exceeds the limit of 40000000 pixels; "
        "send a smaller image or start the server with a larger --max-image-pixels"
    )
    broken = call(server, "POST", "/predictions/pics", content=b"not a png", headers=IMAGE)
    assert broken.status_code == 400 and "cannot decode image" in broken.json()["message"]


IMAGE = {"content-type": "image/png"}


def binary_body(header: dict[str, Any], raw: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + raw, {"Inference-Header-Content-Length": str(len(text))}


def test_v2_binary_tensors_in_and_out(state: ServerState) -> None:
    rows = IRIS.data[[0, 100]].astype(np.float32)
    tensor = {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
    outputs = [{"name": "predictions", "parameters": {"binary_data": True}}, {"name": "scores"}]
    body, headers = binary_body({"id": "b1", "inputs": [tensor], "outputs": outputs}, rows.tobytes())
    answer = call(state, "POST", "/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    size = int(answer.headers["inference-header-content-length"])
    header = json.loads(answer.content[:size])
    assert header["id"] == "b1" and header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(answer.content[size:], dtype="<i8").tolist() == [0, 2]  # predictions, raw
    assert len(header["outputs"][1]["data"]) == 6  # scores as JSON: binary_data was not asked for


@pytest.mark.parametrize(
    ("header_length", "raw", "size", "pattern"),
    [
        ("x", b"", 16, r"Inference-Header-Content-Length 'x' must be the byte length of the JSON part"),
        (None, b"\x00" * 8, 16, r"input 'input' has binary_data_size 16 but only 8 bytes of binary data"),
        (None, b"\x00" * 20, 16, r"4 bytes of binary data are left after the last input"),
        (None, b"\x00" * 12, 12, r"input 'input': 12 bytes of FP32 data, but shape \[1, 4\] needs 16"),
    ],
)
def test_v2_bad_binary_bodies_are_400(
    state: ServerState, header_length: str | None, raw: bytes, size: int, pattern: str
) -> None:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    body, headers = binary_body({"inputs": [tensor]}, raw)
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    response = call(state, "POST", "/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert re.search(pattern, message_of(response)), response.text


def test_v2_config_and_repository_without_a_store(state: ServerState) -> None:
    config = call(state, "GET", "/v2/models/iris/config").json()
    assert config["max_batch_size"] == 32
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 5000}
    assert [i["name"] for i in config["input"]] == FEATURES
    assert config["input"][0] == {
        "name": "sepal_length",
        "data_type": "TYPE_FP64",
        "dims": [1],
        "reshape": {"shape": []},
    }
    assert config["output"][1] == {"name": "scores", "data_type": "TYPE_FP64", "dims": [3]}
    index = call(state, "POST", "/v2/repository/index").json()
    assert index == [
        {"name": "bare", "version": "3", "state": "READY"},
        {"name": "iris", "version": "1", "state": "READY"},
    ]
    load = call(state, "POST", "/v2/repository/models/iris/load")
    assert load.status_code == 400
    assert load.json() == {"error": "this server has no model store; start it with --models STORE"}


def test_v2_image_tensors_obey_max_image_pixels_too() -> None:
    pytest.importorskip("PIL")
    import struct

    from inferline.serve.v2 import HEADER_LENGTH

    handler = SklearnHandler()
    model = LogisticRegression(max_iter=200).fit(IRIS.data[:, :1].repeat(64, axis=1), IRIS.target)
    server = ServerState(ServerConfig(max_image_pixels=1_000_000))
    server.models.add(
        LoadedModel("pics", "1", "mem://pics", handler, model, metadata={"resize": [8, 8], "mode": "L"})
    )
    png = png_header(2000, 1000)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 + len(png)},
                }
            ]
        }
    ).encode()
    body = header + struct.pack("<I", len(png)) + png
    answer = call(
        server,
        "POST",
        "/v2/models/pics/infer",
        content=body,
        headers={HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"},
    )
    assert answer.status_code == 413, answer.text
    assert answer.json() == {
        "error": "model pics/1: image of 2000x1000 pixels (2.0 Mpx) exceeds the limit of 1000000 pixels; "
        "send a smaller image or start the server with a larger --max-image-pixels"
    }
