"""The Dataflow RunInference MNIST model and Pillow-drawn digits for layout tests.

`MnistNet` flattens with `x.view(x.size(0), -1)`, which fails on channels-last activations:
the tests feed it through every path to prove inputs reach torch in the standard layout.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


class MnistNet(torch.nn.Module):
    """Conv(1,3) -> pool -> relu -> Conv(3,3) -> pool -> relu -> Linear(147,128) -> relu -> Linear(128,10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.fc1 = torch.nn.Linear(147, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(torch.max_pool2d(self.conv1(x), 2))
        x = torch.relu(torch.max_pool2d(self.conv2(x), 2))
        x = x.view(x.size(0), -1)
        return self.fc2(torch.relu(self.fc1(x)))


def save_models(folder: Path) -> MnistNet:
    """A seeded MnistNet as `mnist-1.pt` (state_dict) and `mnist-1.pts` (TorchScript)."""
    torch.manual_seed(0)
    model = MnistNet().eval()
    torch.save(model.state_dict(), folder / "mnist-1.pt")
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream (torch 2.9+); Dataflow's model is still saved this way.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(folder / "mnist-1.pts"))
    return model


def draw_digits(folder: Path, count: int) -> list[Path]:
    """`count` 28x28 grayscale PNGs of digits drawn with Pillow's default font."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(image)
        draw.text((8 + i % 5, 6 + i % 7), str(i % 10), fill=255)
        draw.line([(2, 2 + i % 20), (25, 25 - i % 20)], fill=80 + 10 * (i % 10))
        path = folder / f"{i % 10}_{i:03d}.png"
        image.save(path)
        paths.append(path)
    return paths


def pixels(paths: list[Path]) -> np.ndarray:
    """The PNGs as an (n, 1, 28, 28) float32 batch in [0, 1], as the model was fed in training."""
    return np.stack([np.asarray(Image.open(p), dtype=np.float32)[None] / 255.0 for p in paths])


def logits(model: MnistNet, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = model(torch.from_numpy(batch)).numpy()
    return out
