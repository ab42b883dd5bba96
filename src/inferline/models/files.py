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


@contextmanager
def local_folder(uri: str) -> Iterator[str]:
    """A local path holding the folder `uri` (a SavedModel, a Hugging Face model): the folder
    itself, or a temp copy of a remote one."""
    if not is_remote_uri(uri):
        path = uri.removeprefix("file://")
        if not os.path.isdir(path):
            raise ModelError(f"model {uri}: folder not found")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="inferline-model-") as tmp:
        fs, _, (root,) = fsspec.get_fs_token_paths(uri)
        if not fs.isdir(root):
            raise ModelError(f"model {uri}: folder not found")
        target = os.path.join(tmp, "model")
        fs.get(root.rstrip("/") + "/", target, recursive=True)
        yield target
