"""Reading model files from local paths or any fsspec URI."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec

from inferline.errors import ModelError
from inferline.models.base import is_remote_uri


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path holding `uri`'s bytes: the path itself, or a temp copy of a remote file."""
    if not is_remote_uri(uri):
        path = uri.removeprefix("file://")
        if not os.path.exists(path):
            raise ModelError(f"model {uri}: file not found")
        yield path
        return
    suffix = os.path.splitext(uri)[1]
    with tempfile.TemporaryDirectory(prefix="inferline-model-") as tmp:
        target = os.path.join(tmp, "model" + suffix)
        try:
            with fsspec.open(uri, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except FileNotFoundError as exc:
            raise ModelError(f"model {uri}: file not found") from exc
        yield target
