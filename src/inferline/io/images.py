"""Images: decoding one image into a model-ready array, and a source of image files.

`decode_image` is the one preprocessing function (also used by the server and SQL):
Pillow decode -> `mode` (L or RGB) -> `resize` [H, W] -> divide by `scale` -> subtract
`mean` and divide by `std` per channel -> `layout` NCHW (C, H, W) or NHWC (H, W, C), as
float32. `ImagesSource` (`kind: images`) decodes a glob of files on a thread pool and
yields batches with columns `uri`, `width`, `height` (the original size) and `image`
(a tensor column, see `engine/tensors.py`); the key is the file's URI. A file that is not
a readable image becomes a dead letter with its URI and the decoder's error.

Example:
    >>> settings = ImageSettings(resize=(28, 28), mode="L", scale=255.0)
    >>> pixels = decode_image(open("digit.png", "rb").read(), settings)  # doctest: +SKIP
    >>> pixels.shape  # doctest: +SKIP
    (1, 28, 28)
"""

from __future__ import annotations

import io
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from inferline.engine.tensors import tensor_column
from inferline.errors import InputError, SpecError, require
from inferline.io.base import DeadLetter, SourceBatch
from inferline.pipeline import PipelineSpec, SourceSpec

MODES = ("L", "RGB")
LAYOUTS = ("NCHW", "NHWC")
# A batch of decoded pixels is kept under this many bytes (224x224 RGB float32 is 600 kB).
MAX_BATCH_BYTES = 64 << 20
# Images of at most this many pixels decode faster on one thread (see _decode_threads).
TINY_PIXELS = 64 * 64


@dataclass(frozen=True)
class ImageSettings:
    """How to turn image bytes into a model input; see the module docstring for the order.

    Example:
        >>> ImageSettings(resize=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).channels
        3
    """

    resize: tuple[int, int] | None = None
    mode: str = "RGB"
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        where = "source"
        if self.mode not in MODES:
            raise SpecError(f"{where}.mode: {self.mode!r} is not supported; expected L or RGB")
        if self.layout not in LAYOUTS:
            raise SpecError(f"{where}.layout: {self.layout!r} is not supported; expected NCHW or NHWC")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) <= 0):
            raise SpecError(
                f"{where}.resize: expected [height, width] of positive numbers, got {self.resize}"
            )
        if self.scale is not None and self.scale == 0:
            raise SpecError(f"{where}.scale: must not be 0 (pixels are divided by it), e.g. scale: 255")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, self.channels):
                raise SpecError(
                    f"{where}.{name}: expected 1 or {self.channels} values for mode {self.mode}, "
                    f"got {len(values)}"
                )
        if self.std is not None and any(v == 0 for v in self.std):
            raise SpecError(f"{where}.std: values must not be 0 (pixels are divided by them)")

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """The per-image output shape when `resize` fixes it."""
        if self.resize is None:
            return None
        h, w = self.resize
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    @classmethod
    def from_spec(cls, source: SourceSpec) -> ImageSettings:
        """Settings from a source spec's `resize, mode, scale, mean, std, layout`."""
        resize: Any = source.resize
        if resize is not None:
            resize = tuple(int(v) for v in (resize * 2 if len(resize) == 1 else resize))
        return cls(
            resize=resize,
            mode=source.mode or "RGB",
            scale=source.scale,
            mean=tuple(source.mean) if source.mean is not None else None,
            std=tuple(source.std) if source.std is not None else None,
            layout=(source.layout or "NCHW").upper(),
        )


def decode_image(data: bytes, settings: ImageSettings) -> np.ndarray:
    """Image file bytes -> float32 array of shape (C, H, W) or (H, W, C).

    Raises `InputError` when the bytes are not an image Pillow can read.
    """
    return decode_with_size(data, settings)[0]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image header, without decoding any pixels.

    Raises `InputError` when the bytes are not an image Pillow can read.
    """
    image_module: Any = require("PIL.Image", "images")
    try:
        with warnings.catch_warnings():
            # The caller judges the size; Pillow's own bomb warning would only be noise.
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            with image_module.open(io.BytesIO(data)) as image:
                return int(image.size[0]), int(image.size[1])
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image: {exc}".splitlines()[0]) from None


def decode_with_size(data: bytes, settings: ImageSettings) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_image` plus the original (width, height)."""
    image_module: Any = require("PIL.Image", "images")
    try:
        with image_module.open(io.BytesIO(data)) as image:
            size = (int(image.size[0]), int(image.size[1]))
            image = image.convert(settings.mode)
            if settings.resize is not None:
                height, width = settings.resize
                if image.size != (width, height):
                    image = image.resize((width, height), image_module.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image: {exc}".splitlines()[0]) from None
    return normalise(pixels, settings), size


def normalise(pixels: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """(H, W) or (H, W, C) float32 pixels -> scaled, normalised, laid out as `settings.layout`."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if settings.scale is not None:
        pixels = pixels * np.float32(1.0 / settings.scale)
    if settings.mean is not None:
        pixels = pixels - np.asarray(settings.mean, dtype=np.float32)
    if settings.std is not None:
        pixels = pixels / np.asarray(settings.std, dtype=np.float32)
    if settings.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


@dataclass
class Decoded:
    """One image file read and decoded, or why it could not be."""

    uri: str
    pixels: np.ndarray | None
    width: int
    height: int
    size: int
    error: str | None = None


def decode_file(fs: fsspec.AbstractFileSystem, path: str, uri: str, settings: ImageSettings) -> Decoded:
    """Read `path` from `fs` and decode it; errors name `uri` and are returned, not raised."""
    try:
        if isinstance(fs, LocalFileSystem):
            # fsspec's per-call overhead is as large as decoding a small PNG: read directly.
            with open(path, "rb") as handle:
                data = handle.read()
        else:
            data = fs.cat_file(path)
    except FileNotFoundError:
        return Decoded(uri, None, 0, 0, 0, f"{uri}: file not found")
    except OSError as exc:
        return Decoded(uri, None, 0, 0, 0, f"{uri}: cannot read file ({exc})".splitlines()[0])
    try:
        pixels, (width, height) = decode_with_size(data, settings)
    except InputError as exc:
        return Decoded(uri, None, 0, 0, len(data), f"{uri}: {exc}")
    return Decoded(uri, pixels, width, height, len(data))


def image_columns(good: Sequence[Decoded], shape: tuple[int, ...]) -> tuple[list[pa.Field], list[pa.Array]]:
    """`width`, `height` (int32) and the `image` tensor column for decoded images of `shape`."""
    arrays = [g.pixels for g in good if g.pixels is not None]
    stacked = np.stack(arrays) if arrays else np.empty((0, *shape), dtype=np.float32)
    field, column = tensor_column("image", stacked)
    return (
        [pa.field("width", pa.int32()), pa.field("height", pa.int32()), field],
        [
            pa.array([g.width for g in good], pa.int32()),
            pa.array([g.height for g in good], pa.int32()),
            column,
        ],
    )


def _decode_many(
    files: Sequence[tuple[fsspec.AbstractFileSystem, str, str]], settings: ImageSettings
) -> list[Decoded]:
    return [decode_file(fs, path, uri, settings) for fs, path, uri in files]


class ImagesSource:
    """Image files from a glob (local or any fsspec URI), decoded in parallel.

    Example:
        >>> source = ImagesSource("examples/digits/images/*.png", ImageSettings(mode="L"))
    """

    bounded = True
    kind = "images"

    def __init__(
        self,
        path: str | PipelineSpec,
        settings: ImageSettings | None = None,
        *,
        batch_rows: int = 256,
        workers: int | None = None,
    ) -> None:
        if isinstance(path, PipelineSpec):
            spec = path
            assert spec.source.path is not None  # checked by SourceSpec
            path, settings = spec.source.path, ImageSettings.from_spec(spec.source)
            batch_rows, workers = spec.batch.max_size, spec.source.workers
        self.path = path
        self.settings = settings or ImageSettings()
        self.batch_rows = _cap_rows(batch_rows, self.settings)
        self.workers = workers or 0  # 0: chosen in open() from the files' sizes
        self._files: list[tuple[fsspec.AbstractFileSystem, str, str]] = []

    def open(self) -> None:
        from inferline.io.files import expand_paths

        self._files = expand_paths(self.path)
        if not self.workers:
            self.workers = _decode_threads(self._files)

    def progress_total(self) -> int | None:
        # Stat'ing every object of a remote bucket up front is slow; local files are cheap.
        if not self._files or "://" in self._files[0][2]:
            return None
        try:
            return sum(os.path.getsize(path) for _, path, _ in self._files)
        except OSError:
            return None

    def ack(self, position: Any) -> None:
        """Files need no acknowledgement."""

    def close(self) -> None:
        self._files = []

    def batches(self) -> Iterator[SourceBatch]:
        chunks = [self._files[i : i + self.batch_rows] for i in range(0, len(self._files), self.batch_rows)]
        expected: list[tuple[int, ...]] = []
        done = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="inferline-decode") as pool:
            # Decode up to two batches ahead, so decoding overlaps the model and the sink.
            pending: deque[list[Future[list[Decoded]]]] = deque()
            chunk_iter = iter(chunks)
            for chunk in chunk_iter:
                pending.append(self._submit(pool, chunk))
                if len(pending) >= 2:
                    break
            while pending:
                decoded = [d for future in pending.popleft() for d in future.result()]
                next_chunk = next(chunk_iter, None)
                if next_chunk is not None:
                    pending.append(self._submit(pool, next_chunk))
                done += sum(d.size for d in decoded)
                batch = self._batch(decoded, expected)
                batch.progress = done
                yield batch

    def _submit(
        self, pool: ThreadPoolExecutor, chunk: list[tuple[fsspec.AbstractFileSystem, str, str]]
    ) -> list[Future[list[Decoded]]]:
        step = max(1, -(-len(chunk) // (self.workers * 2)))
        return [
            pool.submit(_decode_many, chunk[i : i + step], self.settings) for i in range(0, len(chunk), step)
        ]

    def _batch(self, decoded: list[Decoded], expected: list[tuple[int, ...]]) -> SourceBatch:
        dead: list[DeadLetter] = []
        good: list[Decoded] = []
        for item in decoded:
            if item.pixels is not None and expected and item.pixels.shape != expected[0]:
                h, w = expected[0][1:] if self.settings.layout == "NCHW" else expected[0][:2]
                item.error = (
                    f"{item.uri}: image is {item.height}x{item.width}, expected {h}x{w} like the "
                    "first image; set source.resize: [height, width]"
                )
            if item.error is not None or item.pixels is None:
                dead.append(DeadLetter(key=item.uri, raw=item.uri, error=str(item.error), stage="decode"))
                continue
            if not expected:
                expected.append(item.pixels.shape)
            good.append(item)
        shape = expected[0] if expected else (self.settings.shape or (self.settings.channels, 0, 0))
        fields, columns = image_columns(good, shape)
        uris = pa.array([g.uri for g in good], pa.string())
        schema = pa.schema([pa.field("uri", pa.string()), *fields])
        data = pa.RecordBatch.from_arrays([uris, *columns], schema=schema)
        return SourceBatch(data=data, keys=uris, dead=dead)


def _decode_threads(files: list[tuple[fsspec.AbstractFileSystem, str, str]]) -> int:
    """Decode threads: one per core, except for tiny local images.

    Decoding a tiny image is mostly Python-level Pillow work that holds the GIL; two threads
    then fight over it and are slower than one (measured: 5,000 28x28 PNGs, 0.27 s on one
    thread, 0.63 s on two). Larger images spend their time in C code that releases the GIL.
    """
    cores = max(os.cpu_count() or 1, 1)
    if cores == 1 or not files or not isinstance(files[0][0], LocalFileSystem):
        return cores
    image_module: Any = require("PIL.Image", "images")
    try:
        with image_module.open(files[0][1]) as image:  # reads the header only
            width, height = image.size
    except (OSError, ValueError, SyntaxError):
        return cores
    return decode_threads_for(width * height)


def decode_threads_for(pixels: int) -> int:
    """Decode threads for images of `pixels` pixels: one for tiny images, else one per core."""
    cores = max(os.cpu_count() or 1, 1)
    return 1 if pixels <= TINY_PIXELS else cores


def _cap_rows(rows: int, settings: ImageSettings) -> int:
    shape = settings.shape
    per_image = 4 * int(np.prod(shape)) if shape is not None else 4 * 3 * 512 * 512
    return max(1, min(rows, MAX_BATCH_BYTES // per_image))
