"""`load: image` — rows that name files (as bucket notifications do) get the file decoded.

A message `{"uri": "images/cat.png"}` (or a bare path string on a topic) is turned into a row
with the decoded `image` tensor, using the source's image settings (`resize`, `mode`,
`scale`, `mean`, `std`, `layout`). A file that is missing or not an image dead-letters that
row with its URI and the reason; the other rows go on to the model. Files are fetched
(local or any fsspec URI) and decoded on a thread pool.

Example:
    >>> loader = ImageLoader(ImageSettings(mode="L", resize=(28, 28), scale=255.0))
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import fsspec
import numpy as np
import pyarrow as pa

from inferline.errors import InputError, SpecError
from inferline.io.base import DeadLetter, SourceBatch, row_as_json
from inferline.io.images import Decoded, ImageSettings, decode_file, image_columns
from inferline.pipeline import SourceSpec

LOADERS = ("image",)
URI_FIELDS = ("uri", "path", "url", "file", "name")


class ImageLoader:
    """Adds `image` (and `width`, `height`) to a batch whose rows name image files."""

    def __init__(
        self, settings: ImageSettings, *, field: str | None = None, workers: int | None = None
    ) -> None:
        self.settings = settings
        self.field = field
        self.workers = workers or max(os.cpu_count() or 1, 1)
        self._pool: ThreadPoolExecutor | None = None
        self._shape: tuple[int, ...] | None = settings.shape

    def __call__(self, batch: SourceBatch) -> SourceBatch:
        data = batch.data
        if data.num_rows == 0:
            return batch
        field = self.field or next((f for f in URI_FIELDS if f in data.schema.names), None)
        if field is None:
            raise InputError(
                f"load: image needs a column naming the file ({', '.join(URI_FIELDS)}); "
                f"got {', '.join(data.schema.names)}"
            )
        uris = data.column(field).to_pylist()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="inferline-load")
        decoded = list(self._pool.map(self._load, uris))
        keep = np.ones(data.num_rows, dtype=bool)
        dead = list(batch.dead)
        for row, item in enumerate(decoded):
            if item.error is None and item.pixels is not None and self._shape is None:
                self._shape = item.pixels.shape
            elif item.error is None and item.pixels is not None and item.pixels.shape != self._shape:
                item.error = (
                    f"{item.uri}: image decodes to {item.pixels.shape}, expected {self._shape}; "
                    "set source.resize"
                )
            if item.error is not None or item.pixels is None:
                keep[row] = False
                dead.append(DeadLetter(str(batch.keys[row]), row_as_json(data, row), str(item.error), "load"))
        rows = np.flatnonzero(keep)
        taken = pa.array(rows, type=pa.int64())
        out = data.take(taken) if len(rows) != data.num_rows else data
        fields, columns = image_columns(
            [decoded[i] for i in rows], self._shape or (self.settings.channels, 0, 0)
        )
        for image_field, column in zip(fields, columns, strict=True):
            out = out.append_column(image_field, column)
        published = batch.published_at
        return SourceBatch(
            data=out,
            keys=batch.keys.take(taken) if len(rows) != data.num_rows else batch.keys,
            dead=dead,
            position=batch.position,
            published_at=[published[i] for i in rows] if published is not None else None,
            progress=batch.progress,
        )

    def _load(self, uri: object) -> Decoded:
        if not isinstance(uri, str) or not uri:
            return Decoded(str(uri), None, 0, 0, 0, f"expected a file path or URI, got {uri!r}")
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ValueError, ImportError) as exc:  # an unknown protocol, or its package is missing
            return Decoded(uri, None, 0, 0, 0, f"{uri}: cannot read file ({exc})".splitlines()[0])
        return decode_file(fs, path, uri, self.settings)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def make_loader(source: SourceSpec, *, origin: str) -> ImageLoader | None:
    """The loader for `source.load`, or None when the spec has none."""
    if source.load is None:
        return None
    if source.load not in LOADERS:
        raise SpecError(f"{origin}: source.load: {source.load!r} is not supported; expected image")
    field = source.options.get("uri_field")
    return ImageLoader(
        ImageSettings.from_spec(source), field=str(field) if field else None, workers=source.workers
    )
