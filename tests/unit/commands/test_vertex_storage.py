"""Vertex AI's AIP_STORAGE_URI as a folder of .mar archives on any fsspec filesystem."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import fsspec

from inferline.commands.archives import store_for
from inferline.commands.vertex import Serving, vertex_settings
from inferline.models.store import ModelStore


def mar(name: str, version: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        manifest = {"model": {"modelName": name, "modelVersion": version, "handler": "echo.py"}}
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("echo.py", "def handle(data, context):\n    return data\n")
    return out.getvalue()


def test_a_bucket_of_archives_is_the_model_store() -> None:
    uri = f"memory://vertex-{uuid.uuid4().hex}/mars"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{uri}/echo.mar", mar("echo", "1.0"))
    fs.pipe(f"{uri}/notes.txt", b"not an archive")
    environ = {"AIP_HTTP_PORT": "8080", "AIP_STORAGE_URI": uri}
    serving, _ = vertex_settings(Serving(None, None, [], None, None, None), environ)
    assert serving.model_store == uri and serving.models == []
    store = ModelStore(store_for(serving.models, serving.model_store))
    assert store.names() == ["echo"]
    assert store.current("echo").metadata["model_version"] == "1.0"


def test_a_bucket_without_archives_is_an_inferline_store() -> None:
    uri = f"memory://vertex-{uuid.uuid4().hex}/store"
    fsspec.filesystem("memory").pipe(f"{uri}/iris/1/inferline.json", b"{}")
    serving, _ = vertex_settings(
        Serving(None, None, [], None, None, None), {"AIP_HTTP_PORT": "8080", "AIP_STORAGE_URI": uri}
    )
    assert serving.models == [uri] and serving.model_store is None
