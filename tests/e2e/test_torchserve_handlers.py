"""TorchServe's built-in handlers and `ts.torch_handler` subclasses, without torchvision.

Archives made here with torch-model-archiver, served by one `inferline serve --model-store`:
`image_segmenter` and `object_detector` over tiny TorchScript models that answer what
torchvision's segmentation (`{"out": [N, K, H, W]}`) and detection (`[{"boxes", "labels",
"scores"}]`) models answer, `text_classifier` over an `EmbeddingBag` with a `source_vocab.pt`,
and a custom handler subclassing `ts`' `ImageClassifier` with its own `torchvision.transforms`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import running_server
from tests.e2e.torchserve import archive, png
from tests.lazy import LazyModule, requires

torch = LazyModule("torch")
torch_nets = LazyModule("tests.torch_nets")  # imports torch: only when a test runs
pytestmark = requires("torch", "model_archiver", "ts")


CUSTOM_CLASSIFIER = """
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class TinyColors(ImageClassifier):
    topk = 2
    image_processing = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
"""

TEXTS = {"this movie is good": 1, "a bad bad film": 0}


def bigrams(text: str) -> list[str]:
    words = text.split()
    return words + [" ".join(pair) for pair in zip(words, words[1:], strict=False)]


def script(module: Any, path: Path) -> None:
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; TorchServe archives use it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = work = tmp_path_factory.mktemp("handlers")  # serve reads only the .mar files
    script(torch_nets.Segmenter(), work / "segmenter.pt")
    archive(work, "segmenter", "--version", "1.0", "--serialized-file", "segmenter.pt",
            "--handler", "image_segmenter")  # fmt: skip

    script(torch_nets.Detector(), work / "detector.pt")
    (work / "index_to_name.json").write_text(json.dumps({"1": "sun", "2": "moon"}))
    archive(work, "detector", "--version", "1.0", "--serialized-file", "detector.pt",
            "--handler", "object_detector", "--extra-files", "index_to_name.json")  # fmt: skip

    vocab = {token: i for i, token in enumerate(sorted({t for text in TEXTS for t in bigrams(text)}))}
    bag = torch_nets.Bag(len(vocab))
    with torch.no_grad():
        bag.embedding.weight.zero_()
        bag.embedding.weight[vocab["good"]] = torch.tensor([0.0, 3.0])
        bag.embedding.weight[vocab["bad"]] = torch.tensor([3.0, 0.0])
    script(bag, work / "bag.pt")
    torch.save(vocab, work / "source_vocab.pt")
    (work / "index_to_name.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    archive(work, "sentiment", "--version", "1.0", "--serialized-file", "bag.pt",
            "--handler", "text_classifier",
            "--extra-files", "index_to_name.json,source_vocab.pt")  # fmt: skip

    script(torch_nets.Colors(), work / "colors.pt")
    (work / "index_to_name.json").write_text(json.dumps({"0": "red", "1": "green", "2": "blue"}))
    (work / "tiny_colors.py").write_text(CUSTOM_CLASSIFIER)
    archive(work, "tiny", "--version", "1.0", "--serialized-file", "colors.pt",
            "--handler", "tiny_colors.py", "--extra-files", "index_to_name.json")  # fmt: skip

    others = ("--models", "segmenter.mar", "--models", "detector.mar", "--models", "sentiment.mar")
    with running_server(store / "tiny.mar", "--model-store", str(store), *others, deadline_s=90) as url:
        yield url


def test_image_segmenter_answers_each_pixels_class_and_probability(base: str) -> None:
    answer = httpx.put(f"{base}/predictions/segmenter", content=png((10, 240, 10)), timeout=60)
    assert answer.status_code == 200, answer.text
    pixels = answer.json()  # TorchServe's [H][W][class, probability] after Resize(256), CenterCrop(224)
    assert (len(pixels), len(pixels[0]), len(pixels[0][0])) == (224, 224, 2)
    assert {tuple(p)[0] for row in pixels for p in row} == {1.0}  # green everywhere
    assert min(p[1] for row in pixels for p in row) > 0.99


def test_object_detector_answers_labelled_boxes_over_its_threshold(base: str) -> None:
    files = [
        ("data", ("white.png", png((255, 255, 255), (6, 4)), "image/png")),
        ("data", ("black.png", png((0, 0, 0), (6, 4)), "image/png")),
    ]
    answer = httpx.post(f"{base}/predictions/detector", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    white, black = answer.json()
    assert white == [{"sun": [0.0, 0.0, 6.0, 4.0], "score": pytest.approx(1.0)}]  # the 0.1 box is dropped
    assert black == []


def test_text_classifier_answers_every_label(base: str) -> None:
    good = httpx.post(f"{base}/predictions/sentiment", content=b"This movie is GOOD!", timeout=60)
    assert good.status_code == 200, good.text
    assert set(good.json()) == {"negative", "positive"} and good.json()["positive"] > 0.9
    bad = httpx.post(f"{base}/predictions/sentiment", content=b"A bad, bad film.", timeout=60)
    assert bad.json()["negative"] > 0.99


def test_a_custom_image_classifier_subclass_runs_with_its_own_transforms(base: str) -> None:
    files = [
        ("data", (f"{i}.png", png(color), "image/png")) for i, color in enumerate([(0, 0, 250), (250, 0, 0)])
    ]
    answer = httpx.post(f"{base}/predictions/tiny", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    blue, red = answer.json()
    assert len(blue) == len(red) == 2  # its topk = 2, not the built-in's 5
    assert list(blue)[0] == "blue" and blue["blue"] > 0.9 and list(red)[0] == "red"
