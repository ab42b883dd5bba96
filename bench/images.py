"""Images/s: `inferline run` (kind: images -> digits CNN -> Parquet) vs a hand-written loop.

    python bench/images.py                 # 5,000 PNGs, best of 3
    python bench/images.py --smoke         # ~200 PNGs: checks the benchmark runs
    python bench/images.py --side 224      # bigger PNGs (resized to 28x28 by both contenders)

The hand-written loop is what one writes without inferline: list the files, and per batch
of 256 decode each with Pillow (same mode/resize/scale as the pipeline), stack, run the
model under `torch.inference_mode()`, take the argmax. It decodes, then predicts, then
decodes again; the pipeline decodes on a thread pool while the model runs and the sink
writes. Both are measured in the same run on the same machine; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inferline.engine.local import LocalEngine  # noqa: E402
from inferline.examples import digits  # noqa: E402
from inferline.pipeline import parse_spec  # noqa: E402

BATCH = 256


def make_model(path: Path) -> Any:
    """An untrained DigitsCNN saved as a state_dict: speed does not depend on the weights."""
    import torch

    torch.manual_seed(0)
    model = digits.DigitsCNN().eval()
    torch.save(model.state_dict(), path)
    return model


def run_hand_loop(files: list[Path], model: Any) -> tuple[float, np.ndarray]:
    import torch
    from PIL import Image

    start = time.perf_counter()
    predictions = []
    for offset in range(0, len(files), BATCH):
        pixels = []
        for path in files[offset : offset + BATCH]:
            with Image.open(path) as image:
                image = image.convert("L")
                if image.size != (digits.SIZE, digits.SIZE):
                    image = image.resize((digits.SIZE, digits.SIZE), Image.Resampling.BILINEAR)
                pixels.append(np.asarray(image, dtype=np.float32) / np.float32(255.0))
        batch = torch.from_numpy(np.stack(pixels)[:, None])
        with torch.inference_mode():
            predictions.append(model(batch).argmax(dim=1).numpy())
    return time.perf_counter() - start, np.concatenate(predictions)


def spec_for(folder: Path, model_path: Path, out: Path, workers: int | None) -> dict[str, Any]:
    return {
        "name": "bench-images",
        "source": {
            "kind": "images",
            "path": str(folder / "*.png"),
            "mode": "L",
            "resize": [digits.SIZE, digits.SIZE],
            "scale": 255,
            "workers": workers,
        },
        "model": {
            "name": "digits",
            "uri": str(model_path),
            "model_class": "inferline.examples.digits:DigitsCNN",
        },
        "sink": {"kind": "parquet", "path": str(out)},
        "batch": {"max_size": BATCH},
    }


def run_inferline(folder: Path, model_path: Path, out: Path, workers: int | None) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    summary = LocalEngine(parse_spec(spec_for(folder, model_path, out, workers))).run()
    seconds = time.perf_counter() - start
    table = pq.read_table(out, columns=["key", "prediction"]).sort_by("key")
    assert summary.rows_dead == 0, summary
    return seconds, table["prediction"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--side", type=int, default=digits.SIZE, help="PNG width and height in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each contender")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: cores)")
    parser.add_argument("--smoke", action="store_true", help="~200 images, once: checks the benchmark runs")
    parser.add_argument("--data", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    if args.smoke:
        args.images, args.repeat = 200, 1
    data = Path(args.data)
    folder = data / f"pngs_{args.images}_{args.side}"
    files = [Path(f) for f in digits.write_pngs(str(folder), args.images, args.side)]
    work = Path(tempfile.mkdtemp(prefix="inferline-bench-images-"))
    model_path = work / "digits-1.pt"
    model = make_model(model_path)
    try:
        run_hand_loop(files[:BATCH], model)  # warm up torch and the page cache
        hand_runs = [run_hand_loop(files, model) for _ in range(args.repeat)]
        ours_runs = [
            run_inferline(folder, model_path, work / f"ours{i}.parquet", args.workers)
            for i in range(args.repeat)
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hand = min(t for t, _ in hand_runs)
    ours = min(t for t, _ in ours_runs)
    if not np.array_equal(hand_runs[0][1], ours_runs[0][1]):
        raise SystemExit("inferline and the hand-written loop predict differently")
    n = len(files)
    print(f"images: {n:,} PNGs of {args.side}x{args.side}   cores: {os.cpu_count()}")
    print(f"hand loop (decode, then predict) : {hand:7.2f} s  {n / hand:10,.0f} images/s")
    print(f"inferline run (images source)    : {ours:7.2f} s  {n / ours:10,.0f} images/s")
    print(f"ratio inferline/hand throughput  : {hand / ours:7.2f}x  (target >= 1.0x)")


if __name__ == "__main__":
    main()
