"""The digits example: a small CNN over 28x28 grayscale PNGs of handwritten digits.

scikit-learn's bundled `load_digits` (1,797 8x8 images, nothing downloaded) is upsampled
to 28x28 with Pillow. The CNN trains on 80% in a few seconds on a CPU; the other 20% is
written as PNG files `images/<label>_<i>.png`, which the pipeline classifies into DuckDB.
`DigitsCNN` is importable, so a pipeline names it as
`model_class: inferline.examples.digits:DigitsCNN`.
"""

from __future__ import annotations

import os
import warnings
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from inferline.errors import require
from inferline.examples.quickstart import relocate, run_example

if TYPE_CHECKING:
    from rich.console import Console

SIZE = 28
TORCH: Any = require("torch", "torch")


class DigitsCNN(TORCH.nn.Module):  # type: ignore[misc]
    """Two conv layers and a linear classifier: (n, 1, 28, 28) pixels in [0, 1] -> 10 class
    probabilities. The last layer is a softmax, which is how the model says it is a classifier
    (inferline then answers the most likely digit and the probabilities); training uses `logits`.

    Example:
        >>> DigitsCNN(width=8)(TORCH.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        nn = TORCH.nn
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * (SIZE // 4) ** 2, classes)
        self.probabilities = nn.Softmax(dim=1)  # no weights: older state_dicts still load

    def logits(self, x: Any) -> Any:
        return self.classifier(self.features(x).flatten(1))

    def forward(self, x: Any) -> Any:
        return self.probabilities(self.logits(x))


def pipeline_yaml(root: str = "examples/digits") -> str:
    """The example's pipeline spec, as shipped in the package, reading from `root`."""
    text = resources.files("inferline.examples").joinpath("digits.yaml").read_text(encoding="utf-8")
    return relocate(text, "examples/digits", root)


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All of sklearn's digits as (n, 28, 28) uint8 images (white on black) and labels."""
    datasets: Any = require("sklearn.datasets", "sklearn")
    image_module: Any = require("PIL.Image", "images")
    digits = datasets.load_digits()
    small = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    big = np.stack(
        [
            np.asarray(image_module.fromarray(img).resize((SIZE, SIZE), image_module.Resampling.BILINEAR))
            for img in small
        ]
    )
    return big, np.asarray(digits.target, dtype=np.int64)


def write_pngs(folder: str, count: int, side: int = SIZE) -> list[str]:
    """`count` PNGs of the digits (cycled), `side` x `side` pixels, named `<label>_<i>.png`;
    a folder already holding `count` PNGs is reused (benchmarks call this every run)."""
    from pathlib import Path

    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    existing = sorted(root.glob("*.png"))
    if len(existing) == count:
        return [str(p) for p in existing]
    for old in existing:
        old.unlink()
    images, labels = digit_images()
    for i in range(count):
        image = Image.fromarray(images[i % len(images)])
        if side != SIZE:
            image = image.resize((side, side), Image.Resampling.BILINEAR)
        image.save(root / f"{labels[i % len(labels)]}_{i:05d}.png")
    return [str(p) for p in sorted(root.glob("*.png"))]


def split(n: int, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * (1 - test_fraction))
    return np.sort(order[:cut]), np.sort(order[cut:])


def train(images: np.ndarray, labels: np.ndarray, *, epochs: int = 6, seed: int = 0) -> DigitsCNN:
    """Train `DigitsCNN` on uint8 images scaled to [0, 1] (as `scale: 255` does)."""
    torch = TORCH
    torch.manual_seed(seed)
    model = DigitsCNN()
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model.logits(x[index]), y[index])
            loss.backward()
            optimiser.step()
    model.eval()
    return model


def build(
    root: str = "examples/digits", *, force: bool = False, pipeline_root: str = "examples/digits"
) -> dict[str, str]:
    """Write images/*.png (held-out split), models/digits-1.pt (+ .pts) and pipeline.yaml.

    pipeline.yaml names its files under `pipeline_root`, as seen from where inferline runs
    (`inferline quickstart digits --root DIR` passes DIR/digits). Rebuilds only what is missing;
    returns the paths.
    """
    image_module: Any = require("PIL.Image", "images")
    paths = {
        "images": os.path.join(root, "images"),
        "state_dict": os.path.join(root, "models", "digits-1.pt"),
        "torchscript": os.path.join(root, "models", "digits-1.pts"),
        "pipeline": os.path.join(root, "pipeline.yaml"),
    }
    os.makedirs(paths["images"], exist_ok=True)
    os.makedirs(os.path.dirname(paths["state_dict"]), exist_ok=True)
    have_images = any(name.endswith(".png") for name in os.listdir(paths["images"]))
    have_models = os.path.exists(paths["state_dict"]) and os.path.exists(paths["torchscript"])
    if force or not (have_images and have_models):
        images, labels = digit_images()
        train_rows, test_rows = split(len(images))
        if force or not have_models:
            model = train(images[train_rows], labels[train_rows])
            save_state_dict(model, paths["state_dict"])
            save_torchscript(model, paths["torchscript"])
        for i in test_rows.tolist():
            image_module.fromarray(images[i]).save(os.path.join(paths["images"], f"{labels[i]}_{i}.png"))
    if force or not os.path.exists(paths["pipeline"]):
        with open(paths["pipeline"], "w", encoding="utf-8") as handle:
            handle.write(pipeline_yaml(pipeline_root))
    return paths


def save_state_dict(model: DigitsCNN, path: str) -> None:
    tmp = path + ".tmp"
    TORCH.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def save_torchscript(model: DigitsCNN, path: str) -> None:
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        # TorchScript is in maintenance mode upstream and may say so; the file still loads.
        warnings.simplefilter("ignore")
        TORCH.jit.trace(model, TORCH.zeros(1, 1, SIZE, SIZE)).save(tmp)
    os.replace(tmp, path)


ACCURACY_SQL = (
    "SELECT count(*) AS images, "
    "avg(CASE WHEN prediction = CAST(regexp_extract(key, '(\\d)_\\d+\\.png$', 1) AS BIGINT) "
    "THEN 1.0 ELSE 0.0 END) AS accuracy FROM {table}"
)


def quickstart(root: str, out: Console) -> None:
    """Build the example (trains on first use), run its pipeline, print accuracy and a few rows."""
    import duckdb

    paths = build(os.path.join(root, "digits"), pipeline_root=os.path.join(root, "digits"))
    out.print(f"example ready: images {paths['images']}, model {paths['state_dict']}")
    spec = run_example(paths["pipeline"], out)
    table = spec.sink.table or "digits_predictions"
    with duckdb.connect(str(spec.sink.path), read_only=True) as con:
        out.print(str(con.sql(f"SELECT key, prediction, model_id FROM {table} ORDER BY key LIMIT 5")))
        out.print(str(con.sql(ACCURACY_SQL.format(table=table))))
