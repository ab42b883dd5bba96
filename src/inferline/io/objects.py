"""`source: {kind: objects, path: ...}`: the files under a path as rows, like an object table.

Each file is one row with BigQuery object-table columns `uri, content_type, size, updated` and
`data` (the file's bytes), keyed by its URI. It is the source for files no other source parses
(documents, audio, any binary format): a `map:` step or a hook's `preprocess` turns `data`
into model inputs, and `load: image` decodes images while keeping the metadata columns.
`options: {data: false}` lists metadata without reading the files. A file that cannot be read
is dead-lettered (stage `read`) and the others go on.

Example:
    >>> source = ObjectsSource("docs/**/*.json")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa

from inferline.errors import SpecError
from inferline.io.base import DeadLetter, SourceBatch
from inferline.pipeline import PipelineSpec

CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "csv": "text/csv",
    "txt": "text/plain",
    "json": "application/json",
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
    "pdf": "application/pdf",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
}
# A batch holds at most this many bytes of file contents (and at most `batch.max_size` files).
MAX_BATCH_BYTES = 64 * 1024 * 1024

SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("content_type", pa.string()),
        ("size", pa.int64()),
        ("updated", pa.timestamp("us", tz="UTC")),
        ("data", pa.binary()),
    ]
)


def content_type(uri: str) -> str | None:
    """The MIME type BigQuery would give `uri`, from its extension (None when unknown)."""
    return CONTENT_TYPES.get(os.path.splitext(uri)[1].lstrip(".").lower())


@dataclass
class ObjectFile:
    """One listed file: where it is, its size and modification time."""

    fs: fsspec.AbstractFileSystem
    path: str
    uri: str
    size: int
    updated: dt.datetime | None


def object_row(uri: str, size: int, updated: dt.datetime | None, data: bytes | None) -> dict[str, Any]:
    """One row in `SCHEMA`'s shape (shared with the Beam translation)."""
    return {"uri": uri, "content_type": content_type(uri), "size": size, "updated": updated, "data": data}


class ObjectsSource:
    """Files matching `path` (a file, a folder, a glob; local or any fsspec URI) as rows."""

    bounded = True
    kind = "objects"

    def __init__(self, spec: PipelineSpec) -> None:
        assert spec.source.path is not None  # checked by SourceSpec
        self.path = spec.source.path
        self.batch_rows = spec.batch.max_size
        self.workers = spec.source.workers or 8
        read = spec.source.options.get("data", True)
        if not isinstance(read, bool):
            raise SpecError(f"{spec.origin}: source.options.data: expected true or false, got {read!r}")
        self.read_data = read
        self._files: list[ObjectFile] = []

    def open(self) -> None:
        from inferline.io.files import list_files

        self._files = [
            ObjectFile(fs, path, uri, int(info.get("size") or 0), _modified(info))
            for fs, path, uri, info in list_files(self.path)
        ]

    def progress_total(self) -> int | None:
        # Bytes when contents are read (the work), else files.
        return sum(f.size for f in self._files) if self.read_data else len(self._files)

    def ack(self, position: Any) -> None:
        """Files need no acknowledgement."""

    def close(self) -> None:
        self._files = []

    def batches(self) -> Iterator[SourceBatch]:
        done = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="inferline-objects") as pool:
            for chunk in self._chunks():
                contents = list(pool.map(_read, chunk)) if self.read_data else [None] * len(chunk)
                rows, dead = [], []
                for item, data in zip(chunk, contents, strict=True):
                    if isinstance(data, Exception):
                        error = f"{item.uri}: cannot read file ({data})".splitlines()[0]
                        dead.append(DeadLetter(item.uri, item.uri, error, "read"))
                        continue
                    rows.append(object_row(item.uri, item.size, item.updated, data))
                done += sum(f.size for f in chunk) if self.read_data else len(chunk)
                batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
                keys = batch.column("uri")
                yield SourceBatch(data=batch, keys=keys, dead=dead, progress=done)

    def _chunks(self) -> Iterator[list[ObjectFile]]:
        chunk: list[ObjectFile] = []
        size = 0
        for item in self._files:
            full = len(chunk) >= self.batch_rows or (self.read_data and size + item.size > MAX_BATCH_BYTES)
            if chunk and full:
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += item.size
        if chunk:
            yield chunk


def _modified(info: dict[str, Any]) -> dt.datetime | None:
    # Local files give `mtime` (seconds); object stores name it `updated` or `LastModified`.
    value = info.get("mtime", info.get("updated", info.get("LastModified")))
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None


def _read(item: ObjectFile) -> bytes | Exception:
    try:
        return bytes(item.fs.cat_file(item.path))
    except OSError as exc:
        return exc
