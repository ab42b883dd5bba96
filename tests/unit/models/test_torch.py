"""The PyTorch handler against real models: the digits CNN and tiny modules built here."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from inferline.errors import MissingExtraError, ModelError
from inferline.models.registry import load_model
from inferline.models.store import ModelStore
from inferline.models.torch import TorchHandler
from inferline.pipeline import ModelSpec
from tests.lazy import LazyModule, without_cuda

torch = LazyModule("torch")
digits = LazyModule("inferline.examples.digits")  # imports torch
torch_nets = LazyModule("tests.torch_nets")

CLASS = "inferline.examples.digits:DigitsCNN"


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)


def _forward(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        result: np.ndarray = model(torch.from_numpy(batch)).numpy()
    return result


def test_state_dict_predictions_equal_a_direct_forward_pass(digits_example: Path, batch: np.ndarray) -> None:
    uri = str(digits_example / "models/digits-1.pt")
    reference = digits.DigitsCNN()
    reference.load_state_dict(torch.load(uri, weights_only=True))
    reference.eval()
    probabilities = _forward(reference, batch)  # its last layer is a softmax: a classifier

    handler = TorchHandler(model_class=CLASS, model_params={"width": 16})
    got = handler.predict(handler.load(uri), batch)
    np.testing.assert_array_equal(got.prediction, probabilities.argmax(axis=1))
    assert got.scores is not None
    np.testing.assert_allclose(got.scores, probabilities, rtol=1e-5)


def test_only_a_model_that_says_so_is_a_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    logits = torch.nn.Sequential(torch.nn.Linear(4, 3))
    softmax = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    rows = np.random.default_rng(1).random((5, 4), dtype=np.float32)
    for name, model in (("logits", logits), ("softmax", softmax)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(model.eval()).save(str(tmp_path / f"{name}.pts"))
    handler = TorchHandler()
    raw = handler.predict(handler.load(str(tmp_path / "logits.pts")), rows)
    assert raw.scores is None  # plain logits (or an embedding) come back as the model gives them
    np.testing.assert_allclose(raw.prediction, _forward(logits, rows), rtol=1e-6)
    declared = TorchHandler(output="classes")
    classes = declared.predict(declared.load(str(tmp_path / "logits.pts")), rows)
    assert classes.prediction.tolist() == _forward(logits, rows).argmax(axis=1).tolist()
    np.testing.assert_allclose(classes.scores, torch.softmax(torch.from_numpy(_forward(logits, rows)), 1))
    said = handler.predict(handler.load(str(tmp_path / "softmax.pts")), rows)  # TorchScript keeps Softmax
    np.testing.assert_allclose(said.scores, _forward(softmax, rows), rtol=1e-6)
    assert said.prediction.tolist() == _forward(softmax, rows).argmax(axis=1).tolist()


def test_torchscript_file_needs_no_class(digits_example: Path, batch: np.ndarray) -> None:
    script = TorchHandler()
    scripted = script.predict(script.load(str(digits_example / "models/digits-1.pts")), batch)
    plain = TorchHandler(model_class=CLASS)
    expected = plain.predict(plain.load(str(digits_example / "models/digits-1.pt")), batch)
    np.testing.assert_array_equal(scripted.prediction, expected.prediction)


def test_registry_passes_model_class_params_and_raw_output(digits_example: Path, batch: np.ndarray) -> None:
    spec = ModelSpec(
        name="digits",
        uri=str(digits_example / "models/digits-*.pt"),
        model_class=CLASS,
        model_params={"width": 16},
        output="raw",
    )
    loaded = load_model(spec)
    assert loaded.model_id == "digits/1"
    got = loaded.predict(batch)
    assert got.prediction.shape == (7, 10)
    assert got.scores is None
    np.testing.assert_allclose(got.prediction, _forward(loaded.model, batch), rtol=1e-6)


def test_float64_features_are_fed_as_the_weights_dtype(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    path = tmp_path / "reg.pt"
    torch.save(model.state_dict(), path)
    handler = TorchHandler(model_class="torch.nn:Linear", model_params={"in_features": 4, "out_features": 1})
    rows = np.arange(8, dtype=np.float64).reshape(2, 4)
    got = handler.predict(handler.load(str(path)), rows)
    assert got.prediction.shape == (2,)
    np.testing.assert_allclose(got.prediction, _forward(model, rows.astype(np.float32))[:, 0], rtol=1e-6)


@without_cuda
def test_cuda_without_cuda_is_a_clear_error(digits_example: Path) -> None:
    handler = TorchHandler(model_class=CLASS, device="cuda")
    with pytest.raises(
        ModelError,
        match=r"digits-1\.pt: device cuda requested but CUDA is not available on "
        r"this machine \(torch .*\); use device: cpu or auto",
    ):
        handler.load(str(digits_example / "models/digits-1.pt"))


def test_auto_device_falls_back_to_cpu(digits_example: Path) -> None:
    model = TorchHandler(model_class=CLASS, device="auto").load(str(digits_example / "models/digits-1.pt"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(model.parameters()).device.type == expected


def test_unknown_device(digits_example: Path) -> None:
    with pytest.raises(ModelError, match="unknown device 'tpu'; expected auto, cpu or cuda"):
        TorchHandler(device="tpu").load(str(digits_example / "models/digits-1.pt"))


def test_state_dict_without_model_class_says_to_set_it(digits_example: Path) -> None:
    with pytest.raises(ModelError, match="file holds a state_dict; set model_class: package.module:Class"):
        TorchHandler().load(str(digits_example / "models/digits-1.pt"))


@pytest.mark.parametrize(
    ("model_class", "params", "message"),
    [
        ("DigitsCNN", {}, "model_class 'DigitsCNN' must look like package.module:Class"),
        ("no_such_pkg.mod:Net", {}, "cannot import 'no_such_pkg.mod' for model_class"),
        ("inferline.examples.digits:Nope", {}, "module 'inferline.examples.digits' has no 'Nope'"),
        (CLASS, {"depth": 3}, r"cannot build inferline.examples.digits:DigitsCNN\(\*\*model_params\)"),
        (CLASS, {"width": 8}, "state_dict does not fit inferline.examples.digits:DigitsCNN"),
    ],
)
def test_bad_model_class_or_params(
    digits_example: Path, model_class: str, params: dict[str, int], message: str
) -> None:
    handler = TorchHandler(model_class=model_class, model_params=params)
    with pytest.raises(ModelError, match=message):
        handler.load(str(digits_example / "models/digits-1.pt"))


def test_pickled_module_loads_only_from_trusted_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: np.ndarray
) -> None:
    model = digits.DigitsCNN(width=4).eval()
    path = tmp_path / "whole.pth"
    torch.save(model, path)
    got = TorchHandler().predict(TorchHandler().load(str(path)), batch)
    np.testing.assert_array_equal(got.prediction, _forward(model, batch).argmax(axis=1))

    monkeypatch.setenv("INFERLINE_TRUSTED_PATHS", str(tmp_path / "elsewhere"))
    with pytest.raises(
        ModelError, match="refusing to load a pickled torch module from an untrusted location"
    ):
        TorchHandler().load(str(path))


def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"definitely not torch")
    with pytest.raises(ModelError, match=r"junk\.pt: cannot load as a torch state_dict \(UnpicklingError"):
        TorchHandler(model_class=CLASS).load(str(path))


def test_unknown_output_mode(digits_example: Path) -> None:
    with pytest.raises(
        ValueError, match="output: 'logits' is not supported; expected raw, classes or argmax"
    ):
        TorchHandler(model_class=CLASS, output="logits").load(str(digits_example / "models/digits-1.pt"))


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(MissingExtraError, match=r"torch is not installed: pip install 'inferline\[torch\]'"):
        TorchHandler().load(str(tmp_path / "model.pt"))


def test_a_tuple_of_outputs_gives_each_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch_nets.TwoHeads().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(tmp_path / "heads.pts"))
    rows = np.random.default_rng(2).random((5, 4), dtype=np.float32)
    with torch.no_grad():
        value, vector = (t.numpy() for t in model(torch.from_numpy(rows)))
    plain = TorchHandler()
    got = plain.predict(plain.load(str(tmp_path / "heads.pts")), rows)
    assert got.outputs is not None and list(got.outputs) == ["output_0", "output_1"]
    np.testing.assert_allclose(got.outputs["output_0"], value[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got.outputs["output_1"], vector, rtol=1e-6)
    spec = ModelSpec(name="heads", uri=str(tmp_path / "heads.pts"), outputs=["price", "embedding"])
    named = load_model(spec)
    got = named.predict(rows)
    assert got.outputs is not None and list(got.outputs) == ["price", "embedding"]
    wrong = TorchHandler(named_outputs=["price"])
    expected = r"heads.pts: outputs: names 1 outputs \(price\) but the model returns 2"
    with pytest.raises(ModelError, match=expected):
        wrong.predict(wrong.load(str(tmp_path / "heads.pts")), rows)


def test_outputs_added_with_a_model_are_stored_and_name_its_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch_nets.TwoHeads().eval()).save(str(tmp_path / "heads.pts"))
    store = ModelStore(str(tmp_path / "store"))
    added = store.add("heads", str(tmp_path / "heads.pts"), metadata={"outputs": "price, embedding"})
    assert added.metadata == {"outputs": ["price", "embedding"]}
    assert store.get("heads", 1).metadata == {"outputs": ["price", "embedding"]}  # read back from disk
    got = store.load("heads").predict(np.ones((3, 4), dtype=np.float32))
    assert got.outputs is not None and list(got.outputs) == ["price", "embedding"]
    # A pipeline spec's own outputs: win over the stored ones.
    spec = ModelSpec(name="heads", store=str(tmp_path / "store"), outputs=["value", "vector"])
    got = load_model(spec).predict(np.ones((3, 4), dtype=np.float32))
    assert got.outputs is not None and list(got.outputs) == ["value", "vector"]
    with pytest.raises(ModelError, match=r"metadata outputs=7; expected output names, e\.g\. outputs=price"):
        store.add("heads", str(tmp_path / "heads.pts"), metadata={"outputs": 7})


def test_a_classifier_with_another_output_gives_that_output_a_column(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch_nets.ClassesAndEmbedding().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(tmp_path / "classes.pts"))
    rows = np.random.default_rng(3).random((6, 4), dtype=np.float32) * 4 - 2
    with torch.no_grad():
        probabilities, embedding = (t.numpy() for t in model(torch.from_numpy(rows)))
    handler = TorchHandler()
    got = handler.predict(handler.load(str(tmp_path / "classes.pts")), rows)
    assert got.outputs is not None and list(got.outputs) == ["prediction", "scores", "output_1"]
    assert got.prediction.tolist() == probabilities.argmax(axis=1).tolist()
    assert got.scores is not None
    np.testing.assert_allclose(got.scores, probabilities, rtol=1e-6)
    np.testing.assert_allclose(got.outputs["output_1"], embedding, rtol=1e-6)
    named = load_model(
        ModelSpec(name="classes", uri=str(tmp_path / "classes.pts"), outputs=["probabilities", "embedding"])
    ).predict(rows)
    assert named.outputs is not None and list(named.outputs) == ["prediction", "scores", "embedding"]
    np.testing.assert_allclose(named.outputs["embedding"], embedding, rtol=1e-6)
    raw = TorchHandler(output="raw")
    got = raw.predict(raw.load(str(tmp_path / "classes.pts")), rows)
    assert got.outputs is not None and list(got.outputs) == ["output_0", "output_1"]
