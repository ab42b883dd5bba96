"""Real v2 clients against a real `inferline serve`: tritonclient over REST and gRPC, defaults on.

tritonclient sends and asks for binary tensors by default (the binary tensor data extension
on REST, `raw_input_contents`/`raw_output_contents` on gRPC). Every model type the project
serves is checked for metadata/infer consistency: build each declared input from the
metadata, infer, and get exactly the declared outputs with the declared datatypes.
(The `kserve` SDK pins pandas<3 and cannot be installed next to this project's pandas 3.)
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.conftest import free_port
from tests.e2e.server import running_server
from tests.lazy import LazyModule, requires
from tests.onnx_models import iris_frame, per_column_pipeline

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

torch = LazyModule("torch")
pytestmark = requires("torch")
Image = pytest.importorskip("PIL.Image")

IRIS = load_iris()
NAMES = IRIS.target_names[IRIS.target]  # string classes: BYTES predictions
NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BYTES": np.object_}
IMAGE_META = {"resize": [8, 8], "mode": "L", "scale": 255}


class Models:
    """The models in the store, as the test process loaded them, to compute expected answers."""

    def __init__(self, root: Path, iris_example: Path) -> None:
        self.svc = joblib.load(iris_example / "models/iris-1.joblib")
        self.logistic = LogisticRegression(max_iter=500).fit(IRIS.data, NAMES)
        self.linear = LinearRegression().fit(IRIS.data[:, :3], IRIS.data[:, 3])
        torch.manual_seed(0)
        # A softmax last layer: the model says it classifies (predictions = class ids, scores).
        self.cnn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3), torch.nn.Softmax(dim=1))
        self.cnn.eval()
        self.garden = per_column_pipeline(root / "garden.onnx", with_text=True)  # a text input too
        xgboost = pytest.importorskip("xgboost")
        lightgbm = pytest.importorskip("lightgbm")
        xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(IRIS.data, IRIS.target).save_model(
            root / "boost.json"
        )
        lgbm = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(IRIS.data, IRIS.target)
        lgbm.booster_.save_model(str(root / "gbm.txt"))
        joblib.dump(self.logistic, root / "logistic.joblib")
        joblib.dump(self.linear, root / "linear.joblib")
        torch.save(self.cnn, root / "cnn.pt")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, iris_example: Path) -> tuple[Path, Models]:
    root = tmp_path_factory.mktemp("v2-clients")
    made = Models(root, iris_example)
    store = ModelStore(str(root / "store"))
    store.add("iris", str(iris_example / "models/iris-1.joblib"), inputs=list(FEATURES))
    store.add("iris_onnx", str(iris_example / "models/iris-1.onnx"))
    store.add("species", str(root / "logistic.joblib"))
    store.add("width", str(root / "linear.joblib"), inputs=FEATURES[:3])
    store.add("cnn", str(root / "cnn.pt"), metadata=IMAGE_META)
    store.add("garden", str(root / "garden.onnx"))
    store.add("boost", str(root / "boost.json"))
    store.add("gbm", str(root / "gbm.txt"))
    return root / "store", made


@pytest.fixture(scope="module")
def server(models: tuple[Path, Models]) -> Iterator[tuple[str, str]]:
    """(REST host:port, gRPC host:port) of one server with every model."""
    grpc_port = free_port()
    with running_server(models[0], "--grpc-port", str(grpc_port), "--max-batch-delay", "5") as base:
        yield base.removeprefix("http://"), f"127.0.0.1:{grpc_port}"


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def rest_input(name: str, array: np.ndarray, datatype: str) -> Any:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # binary_data=True: the client's default
    return tensor


def test_rest_infers_with_binary_tensors_by_default(server: tuple[str, str], models: Any) -> None:
    made: Models = models[1]
    client = httpclient.InferenceServerClient(server[0])
    rows = IRIS.data[[3, 77, 140]]
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

    whole = client.infer("iris", [rest_input("input", rows.astype(np.float32), "FP32")], request_id="r-7")
    assert whole.get_response()["id"] == "r-7"
    assert whole.as_numpy("predictions").tolist() == made.svc.predict(rows).tolist()
    assert whole.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 24  # binary answer

    named = [rest_input(f, rows[:, i].astype(np.float64), "FP64") for i, f in enumerate(FEATURES)]
    assert client.infer("iris", named).as_numpy("predictions").tolist() == made.svc.predict(rows).tolist()

    integers = client.infer("iris", [rest_input("input", rows.round().astype(np.int64), "INT64")])
    assert integers.as_numpy("predictions").tolist() == made.svc.predict(rows.round()).tolist()

    species = client.infer(
        "species",
        [rest_input("input", rows, "FP64")],
        outputs=[httpclient.InferRequestedOutput("predictions")],
    )
    assert [v.decode() for v in species.as_numpy("predictions")] == made.logistic.predict(rows).tolist()
    assert species.as_numpy("scores") is None  # only the requested output comes back

    json_only = client.infer(
        "species",
        [rest_input("input", rows, "FP64")],
        outputs=[httpclient.InferRequestedOutput("scores", binary_data=False)],
    )
    assert "data" in json_only.get_response()["outputs"][0]
    np.testing.assert_allclose(json_only.as_numpy("scores"), made.logistic.predict_proba(rows))


def test_rest_image_tensors_as_pixels_and_as_encoded_bytes(server: tuple[str, str], models: Any) -> None:
    made: Models = models[1]
    client = httpclient.InferenceServerClient(server[0])
    pixels = np.random.default_rng(3).integers(0, 256, size=(4, 8, 8))
    batch = (pixels / 255.0).astype(np.float32).reshape(4, 1, 8, 8)
    with torch.inference_mode():
        want = made.cnn(torch.from_numpy(batch)).argmax(axis=1).tolist()
    as_pixels = client.infer("cnn", [rest_input("input", batch, "FP32")])
    assert as_pixels.as_numpy("predictions").tolist() == want
    encoded = np.array([png(p) for p in pixels], dtype=np.object_)
    as_png = client.infer("cnn", [rest_input("input", encoded, "BYTES")])
    assert as_png.as_numpy("predictions").tolist() == want
    np.testing.assert_allclose(as_png.as_numpy("scores"), as_pixels.as_numpy("scores"), rtol=1e-6)


def test_rest_errors_carry_the_servers_message(server: tuple[str, str]) -> None:
    client = httpclient.InferenceServerClient(server[0])
    with pytest.raises(InferenceServerException, match=r"not served; have boost, cnn, garden, gbm"):
        client.infer("roses", [rest_input("input", np.zeros((1, 4), np.float32), "FP32")])
    with pytest.raises(InferenceServerException, match=r"unknown inputs 'x'; expected sepal_length"):
        client.infer("iris", [rest_input("x", np.zeros((1, 4), np.float32), "FP32")])
    with pytest.raises(InferenceServerException, match=r"'input' has shape \[1, 3\]; expected \[-1, 4\]"):
        client.infer("iris", [rest_input("input", np.zeros((1, 3), np.float32), "FP32")])
    with pytest.raises(InferenceServerException, match=r"unknown outputs \['logits'\]"):
        client.infer(
            "iris",
            [rest_input("input", np.zeros((1, 4), np.float32), "FP32")],
            outputs=[httpclient.InferRequestedOutput("logits")],
        )
    assert client.is_model_ready("iris")


def fill(spec: dict[str, Any], rows: int, rng: np.random.Generator) -> np.ndarray:
    shape = [rows if d == -1 else d for d in spec["shape"]]
    if spec["datatype"] == "BYTES":
        return np.array([b"kew", b"eden"] * rows, dtype=np.object_)[: np.prod(shape)].reshape(shape)
    return rng.random(shape).astype(NUMPY_TYPES[spec["datatype"]])


@pytest.mark.parametrize("model", ["iris", "iris_onnx", "species", "width", "cnn", "garden", "boost", "gbm"])
def test_rest_metadata_config_and_infer_agree(server: tuple[str, str], model: str) -> None:
    client = httpclient.InferenceServerClient(server[0])
    meta = client.get_model_metadata(model)
    config = client.get_model_config(model)
    assert config["name"] == model and config["max_batch_size"] == 32
    assert [i["name"] for i in config["input"]] == [i["name"] for i in meta["inputs"]]
    assert [o["name"] for o in config["output"]] == [o["name"] for o in meta["outputs"]]
    for spec, entry in zip(meta["inputs"] + meta["outputs"], config["input"] + config["output"], strict=True):
        assert entry["data_type"] == "TYPE_" + spec["datatype"].replace("BYTES", "STRING")
        assert entry["dims"] == (spec["shape"][1:] or [1])
    rng = np.random.default_rng(0)
    inputs = [rest_input(s["name"], fill(s, 3, rng), s["datatype"]) for s in meta["inputs"]]
    answer = client.infer(model, inputs)
    outputs = answer.get_response()["outputs"]
    assert [o["name"] for o in outputs] == [o["name"] for o in meta["outputs"]]
    for spec, output in zip(meta["outputs"], outputs, strict=True):
        assert output["datatype"] == spec["datatype"]
        assert len(output["shape"]) == len(spec["shape"]) and output["shape"][0] == 3
        assert all(s in (-1, o) for s, o in zip(spec["shape"], output["shape"], strict=True))
        assert answer.as_numpy(spec["name"]).shape == tuple(output["shape"])


def grpc_input(name: str, array: np.ndarray, datatype: str) -> Any:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # raw_input_contents
    return tensor


def test_grpc_infers_through_the_same_models(server: tuple[str, str], models: Any) -> None:
    made: Models = models[1]
    client = grpcclient.InferenceServerClient(server[1])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert not client.is_model_ready("roses")
    assert client.get_server_metadata().name == "inferline"
    rows = IRIS.data[[3, 77, 140]]

    whole = client.infer("iris", [grpc_input("input", rows.astype(np.float32), "FP32")], request_id="g-1")
    assert whole.get_response().id == "g-1" and whole.get_response().model_version == "1"
    assert whole.as_numpy("predictions").tolist() == made.svc.predict(rows).tolist()
    named = [grpc_input(f, rows[:, i].astype(np.float64), "FP64") for i, f in enumerate(FEATURES)]
    assert client.infer("iris", named).as_numpy("predictions").tolist() == made.svc.predict(rows).tolist()

    species = client.infer("species", [grpc_input("input", rows.round().astype(np.int64), "INT64")])
    want = made.logistic.predict(rows.round()).tolist()
    assert [v.decode() for v in species.as_numpy("predictions")] == want
    np.testing.assert_allclose(species.as_numpy("scores"), made.logistic.predict_proba(rows.round()))

    pixels = np.random.default_rng(4).integers(0, 256, size=(2, 8, 8))
    encoded = np.array([png(p) for p in pixels], dtype=np.object_)
    as_png = client.infer("cnn", [grpc_input("input", encoded, "BYTES")])
    with torch.inference_mode():
        batch = torch.from_numpy((pixels / 255.0).astype(np.float32).reshape(2, 1, 8, 8))
        assert as_png.as_numpy("predictions").tolist() == made.cnn(batch).argmax(axis=1).tolist()

    frame = iris_frame().iloc[[0, 1, 2]]
    garden = [grpc_input(f, frame[f].to_numpy(np.float32), "FP32") for f in FEATURES]
    garden.append(grpc_input("garden", frame["garden"].to_numpy().astype(np.object_), "BYTES"))
    want = made.garden.predict_proba(frame[[*FEATURES, "garden"]])  # type: ignore[attr-defined]
    np.testing.assert_allclose(client.infer("garden", garden).as_numpy("scores"), want, atol=1e-5)

    meta = client.get_model_metadata("width", as_json=True)
    assert [i["name"] for i in meta["inputs"]] == FEATURES[:3]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": ["-1"]}]
    config = client.get_model_config("iris", as_json=True)["config"]
    assert config["max_batch_size"] == 32 and config["input"][0]["data_type"] == "TYPE_FP64"


def test_grpc_errors_carry_the_servers_message(server: tuple[str, str]) -> None:
    client = grpcclient.InferenceServerClient(server[1])
    zeros = np.zeros((1, 4), np.float32)
    with pytest.raises(InferenceServerException, match=r"model 'roses' is not served") as missing:
        client.infer("roses", [grpc_input("input", zeros, "FP32")])
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match=r"iris/1: unknown inputs 'x'; expected") as unknown:
        client.infer("iris", [grpc_input("x", zeros, "FP32")])
    assert unknown.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match=r"unknown outputs \['scores'\]; expected predictions"):
        client.infer(
            "iris", [grpc_input("input", zeros, "FP32")], outputs=[grpcclient.InferRequestedOutput("scores")]
        )
    with pytest.raises(InferenceServerException, match=r"model 'roses' is not served"):
        client.get_model_metadata("roses")
