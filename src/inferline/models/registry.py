"""Model names and versions: resolving a spec to the current version and loading it.

A plain `uri:` may be a glob; the newest match is the current version. A file's version
is the number at the end of its name (`iris-3.onnx` -> `3`) or else its name; the newest
match is the highest number, or the most recently modified file when names have none.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import fsspec

from inferline.errors import ModelError, RemoteUnavailable
from inferline.models.base import LoadedModel, handler_for, model_inputs
from inferline.models.store import ModelStore, StoreVersion, load_store_version
from inferline.pipeline import ModelSpec

_TRAILING_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class ModelVersion:
    """One file of a model: where it is and what version it is."""

    uri: str
    version: str
    mtime: float


def version_of(uri: str) -> str:
    stem = os.path.basename(uri.rstrip("/"))
    stem = stem.split(".")[0] if "." in stem else stem
    match = _TRAILING_NUMBER.search(stem)
    return match.group(1) if match else stem


def list_versions(pattern: str) -> list[ModelVersion]:
    """Every file matching `pattern`, oldest first."""
    fs, _, paths = fsspec.get_fs_token_paths(pattern)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    found = []
    for path in paths:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            continue
        mtime = info.get("mtime") or info.get("created") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        uri = prefix + path
        found.append(ModelVersion(uri=uri, version=version_of(uri), mtime=float(mtime)))
    numeric = all(v.version.isdigit() for v in found)
    if numeric:
        found.sort(key=lambda v: (int(v.version), v.mtime))
    else:
        found.sort(key=lambda v: (v.mtime, v.uri))
    return found


def resolve_uri(spec: ModelSpec) -> ModelVersion:
    """The version of `spec` to load now: `spec.version` if pinned, else the newest."""
    if spec.uri is None:
        raise ModelError(f"model {spec.name}: no uri: given")
    versions = list_versions(spec.uri)
    if not versions:
        raise ModelError(f"model {spec.name}: no model file matches {spec.uri}")
    if spec.version is not None:
        for candidate in versions:
            if candidate.version == str(spec.version):
                return candidate
        known = ", ".join(v.version for v in versions)
        raise ModelError(f"model {spec.name}: no version {spec.version} in {spec.uri} (have {known})")
    return versions[-1]


def handler_options(spec: ModelSpec, framework: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if framework in ("sklearn", "onnx", "xgboost", "lightgbm", "catboost"):
        options["scores"] = spec.scores
    if framework in ("onnx", "torch", "keras", "tensorflow", "huggingface"):
        options["device"] = spec.device
    if framework == "huggingface":
        options["scores"] = spec.scores
        options["task"] = spec.task
    if framework in ("torch", "keras", "tensorflow", "tflite", "xgboost", "lightgbm", "catboost"):
        options["scores"] = spec.scores
        options["output"] = spec.output
    if framework == "tensorflow":
        options["signature"] = spec.signature
    if framework in ("torch", "keras", "tensorflow", "tflite") and spec.outputs:
        options["named_outputs"] = list(spec.outputs)
    if framework == "torch":
        options["model_class"] = spec.model_class
        options["model_params"] = spec.model_params
    if framework == "remote":
        options.update(
            batch_size=spec.max_batch,
            timeout=spec.timeout,
            retries=spec.retries,
            concurrency=spec.concurrency,
            auth_env=spec.auth_env,
            protocol=spec.protocol,
        )
    return options


def load_model(spec: ModelSpec) -> LoadedModel:
    """Resolve and load the current version of `spec`.

    Example:
        >>> model = load_model(ModelSpec(name="iris", uri="models/iris-*.joblib"))  # doctest: +SKIP
        >>> model.model_id  # doctest: +SKIP
        'iris/2'
    """
    if spec.store:
        return load_from_store(spec, store_version(spec))
    if spec.url:
        return load_remote(spec)
    version = resolve_uri(spec)
    return load_version(spec, version.uri, version.version)


def store_version(spec: ModelSpec) -> StoreVersion:
    """The store version `spec` asks for: its `version:`, else the store's pin, else the newest."""
    if spec.store is None:
        raise ModelError(f"model {spec.name}: no store: given")
    store = ModelStore(spec.store)
    if spec.version is None:
        return store.current(spec.name)
    if not str(spec.version).isdigit():
        raise ModelError(
            f"model {spec.name}: version {spec.version!r} must be a version number from the store "
            f"(see: inferline models versions {spec.name} --store {spec.store})"
        )
    return store.get(spec.name, int(spec.version))


def load_from_store(spec: ModelSpec, found: StoreVersion) -> LoadedModel:
    framework = spec.framework or found.framework
    loaded = load_store_version(
        found,
        framework=framework,
        inputs=spec.input_columns or None,
        handler_options=handler_options(spec, framework),
    )
    return map_inputs(loaded, spec)


def load_version(spec: ModelSpec, uri: str, version: str) -> LoadedModel:
    from inferline.models.base import detect_framework, detect_suffix

    framework = spec.framework or detect_framework(uri)
    if framework == "tensorflow" and detect_suffix(uri) == "keras":
        # BigQuery's model_type='TENSORFLOW' on a .keras/.h5 file: Keras runs it.
        framework = "keras"
    handler = handler_for(uri, framework=framework, options=handler_options(spec, framework))
    model = handler.load(uri)
    loaded = LoadedModel(
        name=spec.name,
        version=version,
        uri=uri,
        handler=handler,
        model=model,
        inputs=spec.input_columns,
    )
    return map_inputs(loaded, spec)


def map_inputs(loaded: LoadedModel, spec: ModelSpec) -> LoadedModel:
    """`inputs: {model input: column}`: the columns, in the order of the model's inputs."""
    if not isinstance(spec.inputs, dict):
        return loaded
    names = model_inputs(loaded.handler, loaded.model) or list(spec.inputs)
    unknown = [n for n in spec.inputs if n not in names]
    if unknown:
        raise ModelError(
            f"model {spec.name}: inputs: names {', '.join(unknown)} that the model does not take "
            f"(its inputs: {', '.join(names)})"
        )
    loaded.inputs = [spec.inputs.get(n, n) for n in names]
    return loaded


def load_remote(spec: ModelSpec) -> LoadedModel:
    """A model behind an HTTP API (`url:`); its version is the one the server reports."""
    if spec.url is None:
        raise ModelError(f"model {spec.name}: no url: given")
    handler = handler_for(spec.url, framework="remote", options=handler_options(spec, "remote"))
    try:
        remote = handler.load(spec.url)
    except RemoteUnavailable as exc:
        close = getattr(handler, "close", None)
        if close is not None:
            close()
        raise ModelError(
            f"model {spec.name}: {exc}; check that the server is up and the URL is right"
        ) from None
    inputs = spec.input_columns or list(getattr(remote, "inputs", []))
    return LoadedModel(
        name=spec.name,
        version=str(getattr(remote, "version", "remote")),
        uri=str(getattr(remote, "shown", spec.url)),
        handler=handler,
        model=remote,
        inputs=inputs,
    )


class ModelRef:
    """The engine's handle on a model: `current()` is what the next batch should use.

    This one is fixed for the run; a watching registry swaps what `current()` returns.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded

    def current(self) -> LoadedModel:
        return self._loaded

    def close(self) -> None:
        """Stop any background work and release the model's connections (remote models)."""
        close = getattr(self._loaded.handler, "close", None)
        if close is not None:
            close()
