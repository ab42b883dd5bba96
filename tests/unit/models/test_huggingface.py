"""save_pretrained folders built here from tiny configs, against transformers' own pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inferline.engine.predict import run_model
from inferline.errors import ModelError
from inferline.models.base import detect_framework, handler_for
from inferline.models.registry import load_version
from inferline.pipeline import ModelSpec
from tests.hf_models import save_encoder, save_image_classifier, save_sentiment
from tests.lazy import LazyModule, requires

transformers = LazyModule("transformers")
torch = LazyModule("torch")
pytestmark = requires("transformers", "torch")

TEXTS = ["the film was very good", "awful plot", "a great great film", "bad"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    save_sentiment(root / "sentiment")
    save_encoder(root / "encoder")
    save_image_classifier(root / "vit")
    return root


def test_text_classification_gives_labels_and_the_pipelines_scores(folders: Path) -> None:
    path = str(folders / "sentiment")
    assert detect_framework(path) == "huggingface"
    loaded = load_version(ModelSpec(name="sentiment", uri=path, inputs=["review"]), path, "1")
    assert loaded.inputs == ["review"] and loaded.text_inputs == ["review"]
    batch = pa.RecordBatch.from_pydict({"review": TEXTS, "stars": [5, 1, 5, 1]})
    out = run_model(loaded, None, batch, pa.array(["a", "b", "c", "d"]))
    assert out.prediction is not None and not out.dead
    pipe = transformers.pipeline("text-classification", model=path, top_k=None)
    for text, label, scores in zip(TEXTS, out.prediction.prediction, out.prediction.scores, strict=True):
        want = {d["label"]: d["score"] for d in pipe([text])[0]}
        assert label == max(want, key=want.__getitem__)
        np.testing.assert_allclose(scores, [want["NEGATIVE"], want["POSITIVE"]], rtol=1e-5)


def test_feature_extraction_is_the_mean_token_embedding(folders: Path) -> None:
    path = str(folders / "encoder")
    handler = handler_for(path)
    got = handler.predict(handler.load(path), np.array(TEXTS, dtype=object).reshape(-1, 1))
    assert got.scores is None and got.prediction.shape == (4, 16)
    pipe = transformers.pipeline("feature-extraction", model=path)
    for text, row in zip(TEXTS, got.prediction, strict=True):  # one text: no padding to mask
        np.testing.assert_allclose(row, np.asarray(pipe(text))[0].mean(axis=0), rtol=1e-4, atol=1e-5)


def test_image_classification_takes_nchw_pixels(folders: Path) -> None:
    path = str(folders / "vit")
    handler = handler_for(path)
    model = handler.load(path)
    pixels = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    got = handler.predict(model, pixels)
    network = transformers.AutoModelForImageClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        logits = network(pixel_values=torch.from_numpy(pixels)).logits
    np.testing.assert_allclose(got.scores, torch.softmax(logits, dim=1).numpy(), rtol=1e-5)
    assert got.prediction.tolist() == [network.config.id2label[int(i)] for i in logits.argmax(dim=1)]


def test_remote_folders_and_unknown_tasks_are_refused(folders: Path) -> None:
    with pytest.raises(ModelError, match=r"Hugging Face models load from local folders only"):
        handler_for("gs://b/m", framework="huggingface").load("gs://b/m")
    handler = handler_for(str(folders / "encoder"), framework="huggingface", options={"task": "translation"})
    with pytest.raises(
        ModelError, match=r"task 'translation' is not supported; expected one of text-classification"
    ):
        handler.load(str(folders / "encoder"))
