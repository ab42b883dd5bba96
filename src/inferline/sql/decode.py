"""`decode_image(blob[, height, width])`: image bytes -> `[height][width][channels]` floats.

As BigQuery's ML.DECODE_IMAGE: values are pixel / 255 (TensorFlow's `convert_image_dtype`,
which BigQuery uses, so 0..255 -> 0.0..1.0) and channels are as stored: a grayscale PNG has 1,
RGB 3, RGBA 4; palette images become RGB(A). Decoding is per image by nature; a chunk's
images come back as one nested Arrow list built from a single flat buffer.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa

from inferline.errors import SqlError, require

IMAGE_TYPE = "FLOAT[][][]"


def decode(data: bytes, *, height: int = 0, width: int = 0, row: int = 0) -> np.ndarray:
    """One image's bytes -> an (h, w, c) float32 array in [0, 1]."""
    pil: Any = require("PIL.Image", "sql")
    try:
        image = pil.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        head = data[:8].hex()
        raise SqlError(
            f"decode_image: row {row} is not an image ({len(data)} bytes starting {head}: {exc}); "
            "filter by content_type or wrap the call in TRY(...)"
        ) from None
    image = _as_stored_channels(image)
    if height > 0 and width > 0 and image.size != (width, height):
        image = image.resize((width, height), pil.Resampling.BILINEAR)
    array = np.asarray(image)
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    pixels = array.astype(np.float32) / np.float32(scale)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels


def _as_stored_channels(image: Any) -> Any:
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "I;16":
        return image
    if mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode in ("PA",):
        return image.convert("RGBA")
    return image.convert("RGB")


def images_to_arrow(images: list[np.ndarray | None]) -> pa.Array:
    """(h, w, c) arrays (None = NULL) -> one `list<list<list<float>>>` column."""
    present = [img for img in images if img is not None]
    flat = np.concatenate([img.reshape(-1) for img in present]) if present else np.empty(0, np.float32)
    shapes = np.array([img.shape if img is not None else (0, 0, 0) for img in images], dtype=np.int64)
    shapes = shapes.reshape(-1, 3)
    h, w, c = shapes[:, 0], shapes[:, 1], shapes[:, 2]
    pixel_offsets = _offsets(np.repeat(c, h * w))
    row_offsets = _offsets(np.repeat(w, h))
    image_offsets = _offsets(h)
    channels = pa.ListArray.from_arrays(pixel_offsets, pa.array(flat, pa.float32()))
    rows = pa.ListArray.from_arrays(row_offsets, channels)
    mask = pa.array([img is None for img in images], pa.bool_())
    return pa.ListArray.from_arrays(image_offsets, rows, mask=mask)


def _offsets(sizes: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise SqlError("decode_image: a chunk of images is too large; resize with decode_image(data, h, w)")
    return pa.array(offsets.astype(np.int32))


def decode_column(blobs: pa.Array, height: pa.Array, width: pa.Array) -> pa.Array:
    """The vectorised body of the `decode_image` SQL function for one chunk."""
    data = blobs.to_pylist()
    heights = height.to_pylist()
    widths = width.to_pylist()
    images: list[np.ndarray | None] = []
    for row, (blob, h, w) in enumerate(zip(data, heights, widths, strict=True)):
        if blob is None:
            images.append(None)
            continue
        images.append(decode(blob, height=int(h or 0), width=int(w or 0), row=row))
    return images_to_arrow(images)
