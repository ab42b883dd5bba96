"""`inferline serve` with `image/*` bodies: a tiny torch model trained here on Pillow drawings."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest

from inferline.io.images import ImageSettings, decode_image
from inferline.models.store import ModelStore
from tests.e2e.server import running_server
from tests.lazy import LazyModule, requires

torch = LazyModule("torch")
pytestmark = requires("torch")
Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

SETTINGS = ImageSettings(resize=(16, 16), mode="L", scale=255.0)


def drawing(kind: int, rng: np.random.Generator, size: int = 32) -> bytes:
    """A PNG of a filled circle (kind 0) or a horizontal bar (kind 1) at a random place."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(4, 14, size=2)
    if kind == 0:
        r = int(rng.integers(6, 10))
        draw.ellipse([x, y, x + 2 * r, y + 2 * r], fill=255)
    else:
        draw.rectangle([2, y, size - 3, y + 4], fill=255)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    rng = np.random.default_rng(0)
    kinds = np.arange(80) % 2
    x = torch.from_numpy(np.stack([decode_image(drawing(int(k), rng), SETTINGS) for k in kinds]))
    y = torch.from_numpy(kinds)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(256, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    model.eval()
    path = tmp_path_factory.mktemp("shapes") / "shapes.pt"
    torch.save(model, path)  # a pickled module: local files are trusted
    return path, model


def test_image_bodies_are_decoded_with_the_saved_settings(
    tmp_path: Path, shapes_model: tuple[Path, object]
) -> None:
    path, model = shapes_model
    store = tmp_path / "store"
    # Its last layer is a Linear: `output: classes` says it classifies (else its 2 logits come back).
    image_meta = {"image": {"resize": [16, 16], "mode": "L", "scale": 255}, "output": "classes"}
    ModelStore(str(store)).add("shapes", str(path), metadata=image_meta)
    # A state_dict needs its class: the store metadata carries it to the torch handler.
    linear = torch.nn.Linear(4, 3)
    torch.save(linear.state_dict(), tmp_path / "linear.pt")
    class_meta = {"model_class": "torch.nn:Linear", "model_params": {"in_features": 4, "out_features": 3}}
    ModelStore(str(store)).add("linear", str(tmp_path / "linear.pt"), metadata=class_meta)
    rng = np.random.default_rng(1)
    tests = [(k, drawing(k, rng)) for k in (0, 1, 1, 0)]
    with running_server(store) as base:
        answers = [
            httpx.post(f"{base}/predictions/shapes", content=png, headers={"content-type": "image/png"})
            for _, png in tests
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
        pixels = torch.from_numpy(np.stack([decode_image(png, SETTINGS) for _, png in tests]))
        with torch.inference_mode():
            local = model(pixels).argmax(dim=1).tolist()  # type: ignore[operator]
        assert [a.json()["predictions"][0] for a in answers] == local
        assert [a.json()["predictions"][0] for a in answers] == [k for k, _ in tests]  # it learnt
        assert all(abs(sum(a.json()["scores"][0]) - 1) < 1e-6 for a in answers)

        garbage = httpx.post(
            f"{base}/predictions/shapes", content=b"not a png", headers={"content-type": "image/png"}
        )
        assert (
            garbage.status_code == 400 and "model shapes/1: cannot decode image" in garbage.json()["message"]
        )
        wrong = httpx.post(f"{base}/predictions/shapes", json=[[1.0, 2.0]])
        assert wrong.status_code == 422
        assert "input 'instances' has shape [1, 2]; expected [-1, 1, 16, 16]" in wrong.json()["message"]
        nested = decode_image(tests[0][1], SETTINGS).tolist()
        as_json = httpx.post(f"{base}/predictions/shapes", json={"instances": [nested]})
        assert as_json.json()["predictions"] == [local[0]]

        row = [0.5, -1.0, 2.0, 0.25]
        with torch.inference_mode():
            want = linear(torch.tensor([row]))[0].tolist()  # a Linear's 3 outputs, not an argmax
        answer = httpx.post(f"{base}/predictions/linear", json=row).json()
        np.testing.assert_allclose(answer["predictions"], [want], rtol=1e-6)
