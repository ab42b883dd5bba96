"""TorchServe's gRPC APIs (`--ts-grpc-port`), called the way TorchServe documents them.

The client is generated here from TorchServe 0.12's own `inference.proto` and
`management.proto` (read from the torchserve wheel's frontend jar, with the
`google/rpc/status.proto` it imports) by `python -m grpc_tools.protoc --python_out
--grpc_python_out`, and used as `ts_scripts/torchserve_grpc_client.py` uses it:
`PredictionsRequest(model_name=..., input={"data": bytes})` on port P, the management stub
on P+1 with `authorization: Bearer TOKEN` metadata. One server for the module: a `.mar`
image classifier (TorchServe's built-in handler, `index_to_name.json` labels).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import json
import queue
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.conftest import port_pair
from tests.e2e.server import running_server
from tests.e2e.test_torchserve_archives import LABELS
from tests.e2e.torchserve import archive, png
from tests.lazy import LazyModule, requires

torch = LazyModule("torch")
grpc = LazyModule("grpc")
torch_nets = LazyModule("tests.torch_nets")  # imports torch: only when a test runs
pytestmark = requires("torch", "grpc", "grpc_tools", "PIL", "model_archiver")

TOKEN = "grpc-test-token"
AUTH = (("protocol", "gRPC"), ("session_id", "12345"), ("authorization", f"Bearer {TOKEN}"))
CLIENT_MODULES = ("inference_pb2", "inference_pb2_grpc", "management_pb2", "management_pb2_grpc")
PROTOS = ("inference.proto", "management.proto", "google/rpc/status.proto")


@pytest.fixture(scope="module")
def ts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """TorchServe's gRPC client modules, generated from the protos its own server is built from."""
    spec = importlib.util.find_spec("ts")
    jar = Path(spec.origin).parent / "frontend" / "model-server.jar" if spec and spec.origin else None
    if jar is None or not jar.exists():
        pytest.skip("the torchserve package (its frontend jar holds the .protos) is not installed")
    folder = tmp_path_factory.mktemp("ts-grpc-client")
    with zipfile.ZipFile(jar) as archive_file:
        for name in PROTOS:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(archive_file.read(name))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={folder}", f"--python_out={folder}",
         f"--grpc_python_out={folder}", *PROTOS],
        check=True, cwd=folder,
    )  # fmt: skip
    sys.path.insert(0, str(folder))
    try:
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in CLIENT_MODULES})
    finally:
        sys.path.remove(str(folder))
        for name in (*CLIENT_MODULES, "google.rpc.status_pb2", "google.rpc"):
            sys.modules.pop(name, None)


STREAMING_HANDLER = """
import os
import time

from ts.handler_utils.utils import send_intermediate_predict_response


def handle(data, context):
    words = [(row.get("data") or row.get("body")).decode().split() for row in data]
    for step in range(len(words[0]) - 1):  # every word but the last, as it comes
        send_intermediate_predict_response(
            [w[step] for w in words], context.request_ids, "Intermediate Prediction success", 200, context
        )
    for row in data:  # a "flag" input: the last word waits until that file exists
        flag = row.get("flag")
        deadline = time.monotonic() + 60
        while flag and not os.path.exists(flag.decode()) and time.monotonic() < deadline:
            time.sleep(0.01)
    return [w[-1] for w in words]
"""


MIXING_HANDLER = """
import os
import time

SEEN = {}  # requests per sequence: a stateful handler, as TorchServe's sequence batching allows


def handle(data, context):
    for row in data:  # a "flag" input: this batch waits until that file exists
        flag = row.get("flag")
        if flag:
            open(flag.decode() + ".started", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(flag.decode()) and time.monotonic() < deadline:
                time.sleep(0.01)
    out = []
    for i in range(len(data)):
        sequence = context.get_sequence_id(i)
        if sequence:
            SEEN[sequence] = SEEN.get(sequence, 0) + 1
        start = context.get_request_header(i, context.header_key_sequence_start) == "true"
        end = context.get_request_header(i, context.header_key_sequence_end) == "true"
        out.append({"batch": len(data), "sequence": sequence, "start": start, "end": end,
                    "count": SEEN.get(sequence, 0)})
    return out
"""


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """colors.mar 1.0 (English labels), v2/colors.mar 2.0 (French labels), streamer.mar (a
    handler streaming each word of its input), mixer.mar (answers its batch's size and the
    request's sequence), a TorchScript sum.pt."""
    folder = tmp_path_factory.mktemp("ts-grpc")
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; TorchServe archives use it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch_nets.Colors()).save(str(folder / "colors.pt"))
        torch.jit.script(torch_nets.Summer()).save(str(folder / "sum.pt"))
    args = (
        "--serialized-file",
        "colors.pt",
        "--handler",
        "image_classifier",
        "--extra-files",
        "index_to_name.json",
    )
    (folder / "v2").mkdir()
    (folder / "index_to_name.json").write_text(json.dumps({"0": "rouge", "1": "vert", "2": "bleu"}))
    archive(folder, "colors", "--version", "2.0", *args).rename(folder / "v2" / "colors.mar")
    (folder / "index_to_name.json").write_text(json.dumps(LABELS))
    archive(folder, "colors", "--version", "1.0", *args)
    (folder / "streamer.py").write_text(STREAMING_HANDLER)
    archive(folder, "streamer", "--version", "1.0", "--handler", "streamer.py")
    (folder / "mixer.py").write_text(MIXING_HANDLER)
    archive(folder, "mixer", "--version", "1.0", "--handler", "mixer.py")
    return folder


@pytest.fixture(scope="module")
def server(archives: Path) -> Iterator[SimpleNamespace]:
    port = port_pair()
    env = {"INFERLINE_TOKEN": TOKEN, "INFERLINE_TRUSTED_PATHS": str(archives)}
    args = ("--models", "streamer.mar", "--models", "mixer.mar", "--model-store", str(archives))
    args += ("--grpc-port", "0")
    args += ("--ts-grpc-port", str(port))
    with running_server(archives / "colors.mar", *args, env=env) as base:
        inference = grpc.insecure_channel(f"localhost:{port}")
        management = grpc.insecure_channel(f"localhost:{port + 1}")
        try:
            yield SimpleNamespace(base=base, inference=inference, management=management)
        finally:
            inference.close()
            management.close()


def failure(call: Any, request: Any, **kwargs: Any) -> tuple[Any, str]:
    """(status code, details) of the `grpc.RpcError` a call raises."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, **kwargs)
    return raised.value.code(), raised.value.details()


def ts_count(base: str, model: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(f'ts_inference_requests_total{{model_name="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_ping_and_predictions_as_torchserve_grpc_client(server: Any, ts: Any) -> None:
    pb = ts.inference_pb2
    stub = ts.inference_pb2_grpc.InferenceAPIsServiceStub(server.inference)
    from google.protobuf import empty_pb2

    assert json.loads(stub.Ping(empty_pb2.Empty()).health) == {"status": "Healthy"}

    before = ts_count(server.base, "colors")
    red = pb.PredictionsRequest(model_name="colors", input={"data": png((250, 10, 10))})
    response = stub.Predictions(red)
    answer = json.loads(response.prediction.decode("utf-8"))
    assert list(answer)[0] == "red" and set(answer) == {"red", "green", "blue"}
    assert abs(sum(answer.values()) - 1.0) < 1e-4
    green = pb.PredictionsRequest(model_name="colors", model_version="1.0", input={"data": png((5, 240, 5))})
    assert list(json.loads(stub.Predictions(green).prediction))[0] == "green"
    assert ts_count(server.base, "colors") == before + 2  # counted with REST's requests

    code, details = failure(stub.Predictions, pb.PredictionsRequest(model_name="nope", input={"data": b"x"}))
    assert (
        code == grpc.StatusCode.NOT_FOUND
        and details == "model 'nope' is not served; have colors, mixer, streamer"
    )
    version = pb.PredictionsRequest(model_name="colors", model_version="9.9", input={"data": b"x"})
    assert failure(stub.Predictions, version)[0] == grpc.StatusCode.NOT_FOUND
    code, details = failure(stub.Predictions, pb.PredictionsRequest(input={"data": b"x"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "Predictions: model_name is required"
    broken = pb.PredictionsRequest(model_name="colors", input={"data": b"not a png"})
    code, details = failure(stub.Predictions, broken)  # the handler raised: TorchServe's INTERNAL
    assert code == grpc.StatusCode.INTERNAL and "model colors: prediction failed" in details


def test_stream_predictions_answer_in_order(server: Any, ts: Any, tmp_path: Path) -> None:
    pb = ts.inference_pb2
    stub = ts.inference_pb2_grpc.InferenceAPIsServiceStub(server.inference)
    blue = {"data": png((0, 0, 255))}
    streamed = list(stub.StreamPredictions(pb.PredictionsRequest(model_name="colors", input=blue)))
    assert len(streamed) == 1 and list(json.loads(streamed[0].prediction))[0] == "blue"
    missing = pb.PredictionsRequest(model_name="nope", input=blue)
    assert (
        failure(lambda request: list(stub.StreamPredictions(request)), missing)[0]
        == grpc.StatusCode.NOT_FOUND
    )

    # A handler's intermediate responses are streamed as they come: the first word arrives while
    # the handler still waits for the flag file; a unary call gets the last word only.
    flag = tmp_path / "go"
    words = pb.PredictionsRequest(
        model_name="streamer", input={"data": b"one two three", "flag": bytes(flag)}
    )
    responses = stub.StreamPredictions(words, timeout=30)
    assert next(responses).prediction == b"one"
    flag.touch()
    assert [r.prediction for r in responses] == [b"two", b"three"]
    assert stub.Predictions(words).prediction == b"three"

    # StreamPredictions2: one answer per request, in order; a failure is answered in the stream.
    requests = [
        pb.PredictionsRequest(model_name="colors", sequence_id="seq-1", input={"data": png((250, 0, 0))}),
        pb.PredictionsRequest(model_name="nope", sequence_id="seq-1", input=blue),
        pb.PredictionsRequest(model_name="colors", sequence_id="seq-1", input={"data": png((0, 250, 0))}),
    ]
    answers = list(stub.StreamPredictions2(iter(requests)))
    assert [a.sequence_id for a in answers] == ["seq-1"] * 3
    assert list(json.loads(answers[0].prediction))[0] == "red"
    assert not answers[1].prediction and answers[1].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "model 'nope' is not served" in answers[1].status.message
    assert list(json.loads(answers[2].prediction))[0] == "green" and not answers[2].HasField("status")


def test_management_needs_the_token_as_metadata(server: Any, ts: Any) -> None:
    stub = ts.management_pb2_grpc.ManagementAPIsServiceStub(server.management)
    code, details = failure(stub.ListModels, ts.management_pb2.ListModelsRequest())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in details
    wrong = (("authorization", "Bearer nope"),)
    assert failure(stub.ListModels, ts.management_pb2.ListModelsRequest(), metadata=wrong)[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_register_describe_set_default_scale_unregister(server: Any, ts: Any, archives: Path) -> None:
    pb = ts.management_pb2
    stub = ts.management_pb2_grpc.ManagementAPIsServiceStub(server.management)

    def describe_all() -> Any:
        request = pb.DescribeModelRequest(model_name="colors", model_version="all")
        return json.loads(stub.DescribeModel(request, metadata=AUTH).msg)

    listed = json.loads(stub.ListModels(pb.ListModelsRequest(), metadata=AUTH).msg)
    names = [m["modelName"] for m in listed["models"]]
    assert names == ["colors", "mixer", "streamer"] and "nextPageToken" not in listed

    # torchserve_grpc_client.py's register(): url, initial_workers=1, synchronous=True, model_name
    v2 = str(archives / "v2" / "colors.mar")
    register = pb.RegisterModelRequest(url=v2, initial_workers=1, synchronous=True, model_name="colors")
    assert 'Model "colors"' in stub.RegisterModel(register, metadata=AUTH).msg
    code, details = failure(stub.RegisterModel, register, metadata=AUTH)
    assert code == grpc.StatusCode.ABORTED and "version '2.0' is already registered" in details

    described = describe_all()
    assert sorted(d["modelVersion"] for d in described) == ["1.0", "2.0"]
    keys = {"modelName", "modelVersion", "modelUrl", "runtime", "minWorkers", "maxWorkers", "batchSize",
            "maxBatchDelay", "loadedAtStartup", "workers", "jobQueueStatus"}  # fmt: skip
    assert all(keys <= set(d) for d in described)

    default = pb.SetDefaultRequest(model_name="colors", model_version="2.0")
    assert "2.0" in stub.SetDefault(default, metadata=AUTH).msg
    inference = ts.inference_pb2_grpc.InferenceAPIsServiceStub(server.inference)
    red = ts.inference_pb2.PredictionsRequest(model_name="colors", input={"data": png((250, 0, 0))})
    assert list(json.loads(inference.Predictions(red).prediction))[0] == "rouge"  # 2.0's labels

    # ScaleWorker is REST's PUT /models/{name}?min_worker=&max_worker=&synchronous=
    scale = pb.ScaleWorkerRequest(model_name="colors", min_worker=2, max_worker=2, synchronous=True)
    assert stub.ScaleWorker(scale, metadata=AUTH).msg == "Workers scaled to 2 for model: colors"
    assert [(d["modelVersion"], d["minWorkers"]) for d in describe_all()] == [("1.0", 1), ("2.0", 2)]
    later = pb.ScaleWorkerRequest(model_name="colors", model_version="2.0", min_worker=1)
    assert stub.ScaleWorker(later, metadata=AUTH).msg == "Processing worker updates..."
    inverted = pb.ScaleWorkerRequest(model_name="colors", min_worker=3, max_worker=2)
    code, details = failure(stub.ScaleWorker, inverted, metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_worker cannot be less than min_worker" in details

    is_default = pb.UnregisterModelRequest(model_name="colors", model_version="2.0")
    code, details = failure(stub.UnregisterModel, is_default, metadata=AUTH)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "it is the default version" in details
    old = pb.UnregisterModelRequest(model_name="colors", model_version="1.0")
    assert "unregistered" in stub.UnregisterModel(old, metadata=AUTH).msg
    assert [d["modelVersion"] for d in describe_all()] == ["2.0"]


def test_management_errors_carry_torchserve_status_codes(
    server: Any, ts: Any, archives: Path, tmp_path: Path
) -> None:
    pb = ts.management_pb2
    stub = ts.management_pb2_grpc.ManagementAPIsServiceStub(server.management)
    absent = pb.UnregisterModelRequest(model_name="colors", model_version="9.9")
    code, details = failure(stub.UnregisterModel, absent, metadata=AUTH)
    assert code == grpc.StatusCode.NOT_FOUND and "has no such version" in details
    code, details = failure(stub.DescribeModel, pb.DescribeModelRequest(model_name="zzz"), metadata=AUTH)
    assert code == grpc.StatusCode.NOT_FOUND and "model 'zzz' is not served" in details
    custom = pb.DescribeModelRequest(model_name="colors", customized=True)
    code, details = failure(stub.DescribeModel, custom, metadata=AUTH)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "describe_handle" in details
    code, details = failure(stub.RegisterModel, pb.RegisterModelRequest(model_name="x"), metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("RegisterModel: url is required")
    code, details = failure(stub.SetDefault, pb.SetDefaultRequest(model_name="colors"), metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "SetDefault: model_version is required"
    code, details = failure(stub.ScaleWorker, pb.ScaleWorkerRequest(), metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "ScaleWorker: model_name is required"

    # An archive runs its handler's code: outside INFERLINE_TRUSTED_PATHS it is refused, as over REST.
    untrusted = tmp_path / "colors.mar"
    untrusted.write_bytes((archives / "colors.mar").read_bytes())
    register = pb.RegisterModelRequest(url=str(untrusted), model_name="other")
    code, details = failure(stub.RegisterModel, register, metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "untrusted location" in details


def test_other_models_read_json_from_data(server: Any, ts: Any, archives: Path) -> None:
    management = ts.management_pb2_grpc.ManagementAPIsServiceStub(server.management)
    register = ts.management_pb2.RegisterModelRequest(url=str(archives / "sum.pt"), model_name="summer")
    assert 'Model "summer"' in management.RegisterModel(register, metadata=AUTH).msg

    pb = ts.inference_pb2
    stub = ts.inference_pb2_grpc.InferenceAPIsServiceStub(server.inference)
    for key in ("data", "body"):
        request = pb.PredictionsRequest(model_name="summer", input={key: b"[[1, 2, 3], [4, 5, 6]]"})
        answer = json.loads(stub.Predictions(request).prediction)
        assert answer["model_id"] == "summer/1" and answer["predictions"] == [6.0, 15.0]
    code, details = failure(stub.Predictions, pb.PredictionsRequest(model_name="summer", input={"x": b"[1]"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "Predictions summer: no 'data' in input (have x); send input={'data': bytes}"
    malformed = pb.PredictionsRequest(model_name="summer", input={"data": b"[[1, 2"})
    code, details = failure(stub.Predictions, malformed)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed JSON" in details


def test_grpc_and_rest_requests_share_one_batcher(server: Any, ts: Any, tmp_path: Path) -> None:
    pb = ts.inference_pb2
    stub = ts.inference_pb2_grpc.InferenceAPIsServiceStub(server.inference)
    flag = tmp_path / "go"
    first = stub.Predictions.future(
        pb.PredictionsRequest(model_name="mixer", input={"data": b"x", "flag": bytes(flag)}), timeout=60
    )
    wait_for(lambda: flag.with_name("go.started").exists(), "the first batch to reach the handler")
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    def pending() -> int:
        described = httpx.get(f"{server.base}/models/mixer", headers=bearer, timeout=30).json()
        return int(described[0]["jobQueueStatus"]["pendingRequests"])

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        rest = [
            pool.submit(httpx.post, f"{server.base}/predictions/mixer", json={"x": i}, timeout=60)
            for i in range(3)
        ]
        grpc_calls = [
            stub.Predictions.future(
                pb.PredictionsRequest(model_name="mixer", input={"data": b"y"}), timeout=60
            )
            for _ in range(3)
        ]
        wait_for(lambda: pending() == 6, "6 requests queued behind the first batch")
        flag.touch()
        assert json.loads(first.result().prediction)["batch"] == 1
        # The queued REST and gRPC requests went to the handler as one batch.
        assert [json.loads(call.result().prediction)["batch"] for call in grpc_calls] == [6] * 3
        assert [answer.result().json()["batch"] for answer in rest] == [6] * 3


def test_stream_predictions2_tells_the_handler_its_sequence(server: Any, ts: Any) -> None:
    pb = ts.inference_pb2
    stub = ts.inference_pb2_grpc.InferenceAPIsServiceStub(server.inference)
    outgoing: queue.Queue[Any] = queue.Queue()
    responses = stub.StreamPredictions2(iter(outgoing.get, None), timeout=60)
    outgoing.put(pb.PredictionsRequest(model_name="mixer", input={"data": b"a"}))  # no id: a new sequence
    first = next(responses)
    assert first.sequence_id.startswith("ts-seq-")
    assert json.loads(first.prediction) == {
        "batch": 1, "sequence": first.sequence_id, "start": True, "end": False, "count": 1
    }  # fmt: skip
    ending = {"data": b"b", "ts_request_sequence_end": b"true"}
    outgoing.put(pb.PredictionsRequest(model_name="mixer", sequence_id=first.sequence_id, input=ending))
    second = next(responses)
    assert second.sequence_id == first.sequence_id
    assert json.loads(second.prediction) == {
        "batch": 1, "sequence": first.sequence_id, "start": False, "end": True, "count": 2
    }  # fmt: skip
    outgoing.put(None)
    assert list(responses) == []


def wait_for(condition: Any, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {deadline_s} s")
        time.sleep(0.02)
