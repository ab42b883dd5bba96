"""ML.PREDICT straight off an object table (a folder of PNGs) vs calling the model yourself.

    python bench/sql_images.py               # 5,000 PNGs 28x28, best of 3
    python bench/sql_images.py --smoke       # 300 PNGs, once: checks the benchmark runs
    python bench/sql_images.py --side 224    # bigger PNGs (decode_image resizes to 28x28)

With `--side` other than 28 it also times the image tutorials' form,
`ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 28, 28, FALSE)` (bilinear, no antialiasing), against a
hand loop that decodes with Pillow and resizes with `torch.nn.functional.interpolate` (the same
interpolation) before the model.

Contenders, same PNGs, same TorchScript digits CNN (untrained: speed does not depend on the
weights), predictions checked equal, all in one run:

- hand loop: read each file, decode with Pillow (pixels / 255, as ML.DECODE_IMAGE), stack,
  one forward pass per 2,048 images under `torch.inference_mode()`, argmax;
- `ML.PREDICT(MODEL ds.digits, (SELECT uri, ML.DECODE_IMAGE(data) AS image FROM ds.images))`
  (the model's UDF decodes the blobs itself, overlapping decoding and the model: sql/fused.py);
- the native `SELECT uri, predict('ds.digits', decode_image(data)) FROM ds.images` through
  inferline's connection (which reads the object table in full chunks too, and rewrites
  `predict(m, decode_image(data))` into one call that decodes as it predicts);
- the ML.PREDICT statement as it ran before object tables were read in full chunks (the
  translated SQL without the `ORDER BY uri` subquery: DuckDB's read_blob gives one file per
  chunk, so one model call per image);
- the old workaround: `CREATE TABLE t AS SELECT uri, ML.DECODE_IMAGE(data) ...`, then
  `ML.PREDICT(MODEL ds.digits, TABLE t)` (both statements timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import inferline.sql  # noqa: E402
from inferline.examples import digits  # noqa: E402
from inferline.sql import batching, bigquery, fused  # noqa: E402
from inferline.sql.decode import decode  # noqa: E402

CHUNK = 2048


def hand_loop(files: list[Path], model: Any) -> np.ndarray:
    import torch

    predictions = []
    for offset in range(0, len(files), CHUNK):
        pixels = [
            decode(path.read_bytes(), height=digits.SIZE, width=digits.SIZE)
            for path in files[offset : offset + CHUNK]
        ]
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(pixels).transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            predictions.append(model(batch).argmax(dim=1).numpy())
    return np.concatenate(predictions)


def hand_loop_resized(files: list[Path], model: Any) -> np.ndarray:
    import torch

    predictions = []
    for offset in range(0, len(files), CHUNK):
        pixels = [decode(path.read_bytes()) for path in files[offset : offset + CHUNK]]
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(pixels).transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            small = torch.nn.functional.interpolate(
                batch, size=(digits.SIZE, digits.SIZE), mode="bilinear", align_corners=False, antialias=False
            )
            predictions.append(model(small).argmax(dim=1).numpy())
    return np.concatenate(predictions)


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--side", type=int, default=digits.SIZE, help="PNG width and height in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each contender")
    parser.add_argument("--smoke", action="store_true", help="300 images, once: checks the benchmark runs")
    parser.add_argument("--data", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    if args.smoke:
        args.images, args.repeat = 300, 1
    import torch

    folder = Path(args.data) / f"pngs_{args.images}_{args.side}"
    files = [Path(f) for f in digits.write_pngs(str(folder), args.images, args.side)]
    size = digits.SIZE
    image = "ML.DECODE_IMAGE(data)" if args.side == size else f"decode_image(data, {size}, {size})"
    predict = (
        "SELECT uri, predicted_label FROM ML.PREDICT(MODEL ds.digits, "
        f"(SELECT uri, {image} AS image FROM ds.images))"
    )
    with tempfile.TemporaryDirectory(prefix="inferline-bench-sql-images-") as tmp:
        torch.manual_seed(0)
        model_path = str(Path(tmp) / "digits-1.pts")
        digits.save_torchscript(digits.DigitsCNN().eval(), model_path)
        model = torch.jit.load(model_path).eval()
        con = inferline.sql.connect()
        con.sql(
            f"CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{folder}/*.png'], object_metadata='SIMPLE');"
            f"CREATE MODEL ds.digits OPTIONS(model_type='pytorch', model_path='{model_path}')"
        )
        (batched_sql,) = bigquery.translate(predict, con)
        sorted_scan = "(SELECT * FROM ds.images ORDER BY uri) AS images"
        if sorted_scan not in batched_sql:
            raise SystemExit("ML.PREDICT does not read the object table in full chunks")
        per_image_sql = batched_sql.replace(sorted_scan, "ds.images")
        decode_call = image.replace("ML.DECODE_IMAGE", "decode_image")
        native_sql = fused.fuse_native_calls(  # as SqlConnection.sql runs it
            batching.batch_predict_scans(
                f"SELECT uri, predict('ds.digits', {decode_call}) AS predicted_label FROM ds.images", con.raw
            )
        )
        if sorted_scan not in native_sql:
            raise SystemExit("predict() does not read the object table in full chunks")

        def sql(query: str) -> np.ndarray:
            table = con.raw.sql(query).to_arrow_table().sort_by("uri")
            return table.column("predicted_label").to_numpy()

        def workaround() -> np.ndarray:
            con.sql(f"CREATE OR REPLACE TABLE t AS SELECT uri, {image} AS image FROM ds.images")
            relation = con.sql("SELECT uri, predicted_label FROM ML.PREDICT(MODEL ds.digits, TABLE t)")
            assert relation is not None
            return relation.to_arrow_table().sort_by("uri").column("predicted_label").to_numpy()

        hand_loop(files[:CHUNK], model)  # warm up torch and the page cache
        sql(batched_sql)
        hand, expected = best_of(args.repeat, lambda: hand_loop(files, model))
        batched, got = best_of(args.repeat, lambda: sql(batched_sql))
        native, got_native = best_of(args.repeat, lambda: sql(native_sql))
        per_image, got_per_image = best_of(args.repeat, lambda: sql(per_image_sql))
        table, got_table = best_of(args.repeat, workaround)
        resized: tuple[float, float] | None = None
        if args.side != size:
            tutorial = predict.replace(
                image, f"ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), {size}, {size}, FALSE)"
            )
            (tutorial_sql,) = bigquery.translate(tutorial, con)
            if "__inferline_blob" not in tutorial_sql:
                raise SystemExit("ML.PREDICT over ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data)) is not fused")
            hand_resized, expected_resized = best_of(args.repeat, lambda: hand_loop_resized(files, model))
            sql_resized, got_resized = best_of(args.repeat, lambda: sql(tutorial_sql))
            agree = float(np.mean(got_resized == expected_resized))
            if agree < 0.999:  # numpy and torch round differently; an untrained net may tip over
                raise SystemExit(
                    f"ML.RESIZE_IMAGE predicts differently from the hand loop ({agree:.3%} agree)"
                )
            resized = (hand_resized, sql_resized)
        con.close()
    contenders = (("ML.PREDICT", got), ("predict()", got_native), ("per image", got_per_image))
    for name, values in (*contenders, ("workaround", got_table)):
        if not np.array_equal(values, expected):
            raise SystemExit(f"{name} predicts differently from the hand loop")
    n = len(files)
    print(f"images: {n:,} PNGs of {args.side}x{args.side}   cores: {os.cpu_count()}   best of {args.repeat}")
    print(f"hand loop (read, decode, model per {CHUNK:,})  : {hand:7.3f} s  {n / hand:10,.0f} images/s")
    print(f"ML.PREDICT off the object table          : {batched:7.3f} s  {n / batched:10,.0f} images/s")
    print(f"predict(..., decode_image(data)) in SQL  : {native:7.3f} s  {n / native:10,.0f} images/s")
    print(f"  before: one model call per image       : {per_image:7.3f} s  {n / per_image:10,.0f} images/s")
    print(f"  old workaround: decode to table first  : {table:7.3f} s  {n / table:10,.0f} images/s")
    print(f"ratio ML.PREDICT/hand loop throughput    : {hand / batched:7.2f}x  (target >= 1.0x)")
    print(f"ratio ML.PREDICT now/before              : {per_image / batched:7.2f}x")
    if resized is not None:
        hand_resized, sql_resized = resized
        for label, seconds in (
            ("hand loop, Pillow + torch bilinear", hand_resized),
            ("ML.PREDICT, ML.RESIZE_IMAGE(...)", sql_resized),
        ):
            print(f"{label:<41}: {seconds:7.3f} s  {n / seconds:10,.0f} images/s")
        print(
            f"ratio ML.RESIZE_IMAGE/hand loop          : {hand_resized / sql_resized:7.2f}x  (target >= 1.0x)"
        )


if __name__ == "__main__":
    main()
