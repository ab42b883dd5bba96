"""Tiny torch modules the tests script with TorchScript (into archives, model files).

They live here, not in the test modules, so that collecting those modules does not import
torch (every xdist worker collects every module); the tests import this module lazily:
`torch_nets = LazyModule("tests.torch_nets")`.
"""

from __future__ import annotations

import torch


class Colors(torch.nn.Module):  # type: ignore[misc]
    """Logits are the mean of each normalised channel: the dominant colour wins."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 10.0


class Summer(torch.nn.Module):  # type: ignore[misc]
    """Each row's sum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


class Mean(torch.nn.Module):  # type: ignore[misc]
    """Each image's mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


class Segmenter(torch.nn.Module):  # type: ignore[misc]
    """Each pixel's class is its dominant colour channel, as {"out": logits} like torchvision's."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": x * 10.0}


class Detector(torch.nn.Module):  # type: ignore[misc]
    """Two boxes per image: the whole image scored by its brightness, a tiny one scored low."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = []
        for i in range(x.size(0)):
            bright = x[i].mean()
            boxes = torch.tensor([[0.0, 0.0, float(x.size(3)), float(x.size(2))], [1.0, 1.0, 2.0, 2.0]])
            out.append(
                {"boxes": boxes, "labels": torch.tensor([1, 2]), "scores": torch.stack([bright, bright / 10])}
            )
        return out


class Bag(torch.nn.Module):  # type: ignore[misc]
    """Word ids -> the sum of their 2-number embeddings (text_classifier's EmbeddingBag)."""

    def __init__(self, words: int) -> None:
        super().__init__()
        self.embedding = torch.nn.EmbeddingBag(words, 2, mode="sum")

    def forward(self, text: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.embedding(text, offsets)


class TwoHeads(torch.nn.Module):  # type: ignore[misc]
    """(n, 4) -> a value per row and a 3-vector per row: not a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.value = torch.nn.Linear(4, 1)
        self.vector = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.value(x), self.vector(x)


class ClassesAndEmbedding(torch.nn.Module):  # type: ignore[misc]
    """(n, 4) -> 3 class probabilities (a softmax registered last: a classifier) and a 2-vector."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(4, 2)
        self.logits = torch.nn.Linear(4, 3)
        self.softmax = torch.nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.softmax(self.logits(x)), self.embed(x)
