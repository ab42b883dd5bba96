"""BigQuery ML's image functions over decoded images (`FLOAT[][][]`, `[height][width][channels]`).

    ML.RESIZE_IMAGE(image, target_height, target_width, preserve_aspect_ratio)
    ML.CONVERT_COLOR_SPACE(image, 'RGB' | 'GRAYSCALE' | 'HSV' | 'YIQ' | 'YUV')
    ML.CONVERT_IMAGE_TYPE(image)

BigQuery's reference says ML.RESIZE_IMAGE uses bilinear interpolation; this is plain bilinear
interpolation with half-pixel centres and no antialiasing (TensorFlow 2's `tf.image.resize`
default, PyTorch's `interpolate(mode='bilinear', align_corners=False)`): output pixel `i`
samples the input at `(i + 0.5) * in / out - 0.5`, clamped to the edges. Enlarging, that is
exactly Pillow's BILINEAR on float images; shrinking by 2 it is Pillow's BOX (Pillow's
BILINEAR antialiases when shrinking, which plain interpolation does not). With
`preserve_aspect_ratio` the image is scaled by the smaller of the two factors, each side
rounded down (at least 1), so it fits in `target_height x target_width`.

Colour spaces take an RGB image in [0, 1]: GRAYSCALE is ITU-R 601 luma (0.299 R + 0.587 G +
0.114 B, Pillow's "L" without rounding; one channel), HSV as `colorsys` (hue in [0, 1)), YIQ
and YUV by the NTSC/PAL matrices TensorFlow's `rgb_to_yiq`/`rgb_to_yuv` use; 'RGB' returns the
image. ML.CONVERT_IMAGE_TYPE gives 8-bit pixels, `floor(x * 255.5)` clipped to 0..255 (as
TensorFlow's `convert_image_dtype`), so it inverts ML.DECODE_IMAGE's `pixel / 255`.

Each SQL call gets a whole chunk; images of one size are transformed together in numpy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.sql.decode import images_to_arrow

Image = np.ndarray  # (h, w, c)

YIQ = np.array(
    [[0.299, 0.59590059, 0.2115], [0.587, -0.27455667, -0.52273617], [0.114, -0.32134392, 0.31119955]],
    dtype=np.float64,
)
YUV = np.array(
    [[0.299, -0.14714119, 0.61497538], [0.587, -0.28886916, -0.51496512], [0.114, 0.43601035, -0.10001026]],
    dtype=np.float64,
)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
COLOR_SPACES = ("RGB", "GRAYSCALE", "HSV", "YIQ", "YUV")


def target_size(height: int, width: int, target_h: int, target_w: int, preserve: bool) -> tuple[int, int]:
    """The output size: the target, or with `preserve` the largest that fits and keeps the ratio."""
    if not preserve:
        return target_h, target_w
    if target_h * width <= target_w * height:  # the height limits
        return target_h, max(1, (width * target_h) // height)
    return max(1, (height * target_w) // width), target_w


def _axis(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = (np.arange(out, dtype=np.float64) + 0.5) * (size / out) - 0.5
    src = np.clip(src, 0.0, size - 1)
    lower = np.floor(src).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, (src - lower).astype(np.float32)


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, h, w, c) float32 images -> (n, height, width, c), bilinear with half-pixel centres."""
    n, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    top_i, bottom_i, fy = _axis(h, height)
    left_i, right_i, fx = _axis(w, width)
    top, bottom = images[:, top_i], images[:, bottom_i]
    rows = top + (bottom - top) * fy[None, :, None, None]
    left, right = rows[:, :, left_i], rows[:, :, right_i]
    return np.ascontiguousarray(left + (right - left) * fx[None, None, :, None])


def resize_stored(stored: np.ndarray, height: int, width: int) -> np.ndarray:
    """One image's stored pixels (h, w, c) -> `resize_bilinear` of its [0, 1] floats; only the
    rows the interpolation reads are scaled (same values, less work on large images)."""
    from inferline.sql.decode import scale

    h, w, _ = stored.shape
    if (h, w) == (height, width):
        return scale(stored)
    top_i, bottom_i, fy = _axis(h, height)
    top, bottom = scale(stored[top_i]), scale(stored[bottom_i])
    rows = top + (bottom - top) * fy[:, None, None]
    left_i, right_i, fx = _axis(w, width)
    left, right = rows[:, left_i], rows[:, right_i]
    return np.ascontiguousarray(left + (right - left) * fx[None, :, None])


def convert_color_space(images: np.ndarray, space: str) -> np.ndarray:
    """(n, h, w, 3) RGB floats -> the same pixels in `space` (GRAYSCALE has one channel)."""
    if space == "RGB":
        return images
    rgb = images.astype(np.float64)
    if space == "GRAYSCALE":
        return (rgb @ LUMA)[..., None].astype(np.float32)
    if space in ("YIQ", "YUV"):
        return (rgb @ (YIQ if space == "YIQ" else YUV)).astype(np.float32)
    return _hsv(rgb).astype(np.float32)


def _hsv(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    spread = value - rgb.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(value > 0, spread / value, 0.0)
        rc, gc, bc = ((value - x) / spread for x in (r, g, b))
    hue = np.where(r == value, bc - gc, np.where(g == value, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = np.where(spread > 0, (hue / 6.0) % 1.0, 0.0)
    return np.stack([hue, saturation, value], axis=-1)


def convert_image_type(images: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> 8-bit pixel values (as int32)."""
    return np.clip(np.floor(images.astype(np.float64) * 255.5), 0, 255).astype(np.int32)


def arrow_images(column: pa.Array, where: str) -> list[Image | None]:
    """A `FLOAT[][][]` chunk -> one (h, w, c) float32 array per row (None for NULL)."""
    heights = _lengths(column)
    rows = column.flatten()
    widths = _lengths(rows)
    pixels = rows.flatten()
    channels = _lengths(pixels)
    values = np.asarray(pixels.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    row_start = _starts(heights)
    pixel_start = _starts(widths)
    value_start = _starts(channels)
    images: list[Image | None] = []
    for i, h in enumerate(heights.tolist()):
        if not column[i].is_valid:
            images.append(None)
            continue
        r0, r1 = row_start[i], row_start[i] + h
        w = int(widths[r0]) if h else 0
        p0, p1 = pixel_start[r0], pixel_start[r1]
        c = int(channels[p0]) if p1 > p0 else 0
        if (widths[r0:r1] != w).any() or (channels[p0:p1] != c).any():
            raise SqlError(f"{where}: row {i} is not an image: its rows or pixels differ in length")
        images.append(values[value_start[p0] : value_start[p1]].reshape(h, w, c))
    return images


def _lengths(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False), np.int64)


def _starts(lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


def by_shape(images: list[Image | None], fn: Callable[[np.ndarray], np.ndarray]) -> list[Image | None]:
    """Apply `fn` to each group of same-shaped images as one (n, h, w, c) batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        if image is not None:
            groups.setdefault(image.shape, []).append(i)
    out: list[Image | None] = [None] * len(images)
    for rows in groups.values():
        batch = fn(np.stack([images[i] for i in rows]))  # type: ignore[misc]
        for i, result in zip(rows, batch, strict=True):
            out[i] = result
    return out


def resize_column(column: pa.Array, heights: pa.Array, widths: pa.Array, preserve: pa.Array) -> pa.Array:
    """The vectorised body of `resize_image(image, h, w, preserve_aspect_ratio)` for one chunk."""
    where = "ML.RESIZE_IMAGE"
    images = arrow_images(column, where)
    hs, ws, keeps = heights.to_pylist(), widths.to_pylist(), preserve.to_pylist()
    groups: dict[tuple[tuple[int, ...], tuple[int, int]], list[int]] = {}
    for i, image in enumerate(images):
        h, w, keep = hs[i], ws[i], keeps[i]
        if image is None or h is None or w is None or keep is None:
            continue
        if h < 1 or w < 1:
            raise SqlError(f"{where}: row {i}: target height and width must be at least 1, got {h} x {w}")
        target = target_size(image.shape[0], image.shape[1], int(h), int(w), bool(keep))
        groups.setdefault((image.shape, target), []).append(i)
    out: list[Image | None] = [None] * len(images)
    for (_, (h, w)), rows in groups.items():
        batch = resize_bilinear(np.stack([images[i] for i in rows]), h, w)  # type: ignore[misc]
        for i, result in zip(rows, batch, strict=True):
            out[i] = result
    return images_to_arrow(out)


def color_space_column(column: pa.Array, spaces: pa.Array) -> pa.Array:
    """The vectorised body of `convert_color_space(image, space)` for one chunk."""
    where = "ML.CONVERT_COLOR_SPACE"
    names = [None if s is None else str(s).upper() for s in spaces.to_pylist()]
    unknown = sorted({s for s in names if s is not None and s not in COLOR_SPACES})
    if unknown:
        raise SqlError(f"{where}: unknown color space {unknown[0]!r}; use one of {', '.join(COLOR_SPACES)}")
    images = arrow_images(column, where)
    for i, image in enumerate(images):
        if image is not None and image.shape[2] != 3:
            raise SqlError(f"{where}: row {i} has {image.shape[2]} channels; it converts RGB images (3)")
    out: list[Image | None] = [None] * len(images)
    for space in sorted({s for s in names if s is not None}):
        chosen = [img if name == space else None for img, name in zip(images, names, strict=True)]
        convert = functools.partial(_convert_to, space=space)
        for i, result in enumerate(by_shape(chosen, convert)):
            if result is not None:
                out[i] = result
    return images_to_arrow(out)


def _convert_to(batch: np.ndarray, *, space: str) -> np.ndarray:
    return convert_color_space(batch, space)


def image_type_column(column: pa.Array) -> pa.Array:
    """The vectorised body of `convert_image_type(image)`: `INTEGER[][][]` pixel values."""
    images = by_shape(arrow_images(column, "ML.CONVERT_IMAGE_TYPE"), convert_image_type)
    floats = images_to_arrow([None if i is None else i.astype(np.float32) for i in images])
    return floats.cast(pa.list_(pa.list_(pa.list_(pa.int32()))))
