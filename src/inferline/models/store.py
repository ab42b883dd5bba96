"""The model store: named models with numbered, immutable versions in a folder or any fsspec URI.

Layout (plain files, so `ls` and `gsutil ls` tell the truth)::

    ROOT/NAME/VERSION/<original file name>   the model file, copied in
    ROOT/NAME/VERSION/inferline.json         its metadata, written last: a version without it
                                             is still being copied and is invisible
    ROOT/NAME/pinned                         the pinned version number, when pinned
    ROOT/NAME/last_version                   the highest number ever given out, so numbers
                                             are never reused after a remove

Example:
    >>> store = ModelStore("model_store")  # doctest: +SKIP
    >>> store.add("iris", "iris.onnx").version  # doctest: +SKIP
    1
    >>> store.load("iris").model_id  # doctest: +SKIP
    'iris/1'
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from inferline.errors import ModelError
from inferline.models.base import FRAMEWORKS, LoadedModel, detect_framework, handler_for, handler_parameters

METADATA_FILE = "inferline.json"
PIN_FILE = "pinned"
COUNTER_FILE = "last_version"
DEFAULT_STORE = "model_store"
STORE_ENV = "INFERLINE_STORE"

# Metadata keys that configure a version's handler (`models add --meta signature=embed`, or
# POST /models?task=...); each goes only to handlers that take it.
HANDLER_OPTIONS = ("model_class", "model_params", "output", "device", "signature", "task", "scores")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoreVersion:
    """One immutable version of a model in the store."""

    name: str
    version: int
    uri: str  # the model file inside the store
    sha256: str
    framework: str
    inputs: list[str]
    created: str  # ISO-8601 UTC
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return f"{self.name}/{self.version}"


def default_store() -> str:
    """The store folder used when none is given: `$INFERLINE_STORE` or `model_store`."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


class ModelStore:
    """Named, versioned models under `root` (a folder or an fsspec URI such as `gs://b/models`).

    The constructor does no I/O; every method reads the store afresh, so several processes
    (a pipeline, a server, the CLI) can share one store.

    Example:
        >>> store = ModelStore("model_store")
        >>> store.root
        'model_store'
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._fs: Any = None
        self._base = ""

    # --- reading --------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every model name in the store, sorted; empty when the store does not exist yet."""
        fs, base = self._filesystem()
        if not fs.isdir(base):
            return []
        return sorted(
            name
            for entry in fs.ls(base, detail=True)
            if entry["type"] == "directory" and _NAME.match(name := _basename(entry["name"]))
        )

    def versions(self, name: str) -> list[StoreVersion]:
        """The complete versions of `name`, oldest first."""
        fs, _ = self._filesystem()
        model_dir = self._model_dir(name)
        if not fs.isdir(model_dir):
            raise ModelError(self._unknown_model(name))
        found = []
        for number in self._version_numbers(model_dir):
            version = self._read_version(name, number)
            if version is not None:
                found.append(version)
        return found

    def get(self, name: str, version: int | None = None) -> StoreVersion:
        """Version `version` of `name`, or the current one when `version` is None."""
        if version is None:
            return self.current(name)
        found = self._read_version(name, int(version))
        if found is None:
            have = ", ".join(str(v.version) for v in self.versions(name)) or "none"
            raise ModelError(
                f"model store {self.root}: model {name!r} has no version {version} (have: {have}); "
                f"see: inferline models versions {name}"
            )
        return found

    def current(self, name: str) -> StoreVersion:
        """The version in use: the pinned one, else the newest."""
        pinned = self.pinned(name)
        if pinned is not None:
            return self.get(name, pinned)
        versions = self.versions(name)
        if not versions:
            raise ModelError(
                f"model store {self.root}: model {name!r} has no versions; "
                f"add one with: inferline models add {name} FILE --store {self.root}"
            )
        return versions[-1]

    def pinned(self, name: str) -> int | None:
        """The pinned version number of `name`, or None."""
        fs, _ = self._filesystem()
        model_dir = self._model_dir(name)
        try:
            text = fs.cat_file(f"{model_dir}/{PIN_FILE}").decode("utf-8").strip()
        except FileNotFoundError:
            if not fs.isdir(model_dir):
                raise ModelError(self._unknown_model(name)) from None
            return None
        if not text.isdigit():
            raise ModelError(
                f"model store {self.root}: {model_dir}/{PIN_FILE} holds {text!r}, expected a version "
                f"number; fix it with: inferline models pin {name} VERSION"
            )
        return int(text)

    def load(
        self,
        name: str,
        version: int | None = None,
        *,
        framework: str | None = None,
        inputs: list[str] | None = None,
        handler_options: dict[str, Any] | None = None,
    ) -> LoadedModel:
        """Load a version (default: current) as a `LoadedModel` whose version is the number.

        `framework`/`inputs` override what was recorded at `add`; `handler_options` go to the
        framework handler (e.g. `{"device": "cuda"}`).
        """
        found = self.get(name, version)
        return load_store_version(found, framework=framework, inputs=inputs, handler_options=handler_options)

    # --- writing --------------------------------------------------------------------
    def add(
        self,
        name: str,
        file: str,
        *,
        framework: str | None = None,
        inputs: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> StoreVersion:
        """Copy `file` (a path or URI) in as the next version of `name` and return it.

        The bytes go to a temporary name and are renamed into place; the metadata file is
        written last, so readers and watchers never see a half-copied version.
        """
        _check_name(name)
        framework = framework or detect_framework(file)
        if framework not in FRAMEWORKS:
            raise ModelError(
                f"model file {file}: unknown framework {framework!r}; expected one of "
                f"{', '.join(sorted(FRAMEWORKS))}"
            )
        fs, _ = self._filesystem()
        model_dir = self._model_dir(name)
        filename = _basename(file)
        if not filename or filename in (METADATA_FILE,) or filename.startswith("."):
            raise ModelError(f"model file {file!r}: expected a file name such as iris.onnx")
        folder = _folder_files(file)
        if folder is None:
            try:
                source = fsspec.open(file, "rb")
                with source as probe:
                    probe.read(0)
            except (FileNotFoundError, IsADirectoryError):
                raise ModelError(f"model file {file}: not found (expected a model file to add)") from None
        if metadata and "outputs" in metadata:
            metadata = {**metadata, "outputs": output_names(metadata["outputs"], where=f"model file {file}")}
        if framework == "torchserve":  # a .mar: its manifest's version string and handler
            from inferline.models.mar import archive_metadata

            metadata = {**archive_metadata(file), **(metadata or {})}
        number = self._claim_version(name)
        version_dir = f"{model_dir}/{number}"
        partial = f"{version_dir}/.{filename}.{uuid.uuid4().hex}.partial"
        digest = hashlib.sha256()
        try:
            if folder is None:
                with source as src, fs.open(partial, "wb") as dst:
                    _copy(src, dst, digest)
            else:
                # A model folder (SavedModel, Hugging Face): every file, in path order, so the
                # digest names the whole tree; renamed into place in one step like a file.
                for relative, opener in folder:
                    digest.update(relative.encode() + b"\0")
                    fs.makedirs(f"{partial}/{relative}".rsplit("/", 1)[0], exist_ok=True)
                    with opener() as src, fs.open(f"{partial}/{relative}", "wb") as dst:
                        _copy(src, dst, digest)
            fs.mv(partial, f"{version_dir}/{filename}", recursive=folder is not None)
        except BaseException:
            # Leave no half version behind; its number stays used (last_version).
            fs.rm(version_dir, recursive=True)
            raise
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        record = {
            "name": name,
            "version": number,
            "file": filename,
            "sha256": digest.hexdigest(),
            "framework": framework,
            "inputs": list(inputs or []),
            "created": created.replace("+00:00", "Z"),
            "metadata": dict(metadata or {}),
        }
        self._write_text(f"{version_dir}/{METADATA_FILE}", json.dumps(record, indent=2, sort_keys=True))
        found = self._read_version(name, number)
        if found is None:  # pragma: no cover - the file was just written
            raise ModelError(f"model store {self.root}: version {name}/{number} vanished while adding")
        return found

    def pin(self, name: str, version: int) -> None:
        """Make `version` the current version of `name` until `unpin`."""
        self.get(name, int(version))  # must exist
        self._write_text(f"{self._model_dir(name)}/{PIN_FILE}", f"{int(version)}\n")

    def unpin(self, name: str) -> None:
        """Make the newest version current again (no-op when not pinned)."""
        fs, _ = self._filesystem()
        model_dir = self._model_dir(name)
        if not fs.isdir(model_dir):
            raise ModelError(self._unknown_model(name))
        try:
            fs.rm_file(f"{model_dir}/{PIN_FILE}")
        except FileNotFoundError:
            pass

    def remove(self, name: str, version: int | None = None) -> None:
        """Delete one version, or the whole model when `version` is None.

        A pinned version cannot be removed (unpin first); numbers are never reused.
        """
        fs, _ = self._filesystem()
        model_dir = self._model_dir(name)
        if version is None:
            if not fs.isdir(model_dir):
                raise ModelError(self._unknown_model(name))
            fs.rm(model_dir, recursive=True)
            return
        self.get(name, int(version))
        if self.pinned(name) == int(version):
            raise ModelError(
                f"model store {self.root}: {name}/{version} is pinned; "
                f"unpin it first with: inferline models unpin {name}"
            )
        fs.rm(f"{model_dir}/{int(version)}", recursive=True)

    def uri_of(self, name: str) -> str:
        """Where `name`'s versions live (a local folder or a URI), e.g. for a file watcher."""
        return self._display(self._model_dir(name))

    # --- internals ------------------------------------------------------------------
    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            fs, base = fsspec.core.url_to_fs(self.root)
            self._fs, self._base = fs, base.rstrip("/") or "/"
        return self._fs, self._base

    def _is_local(self) -> bool:
        fs, _ = self._filesystem()
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return protocol in ("file", "local")

    def _display(self, path: str) -> str:
        fs, _ = self._filesystem()
        return str(path) if self._is_local() else str(fs.unstrip_protocol(path))

    def _model_dir(self, name: str) -> str:
        _check_name(name)
        _, base = self._filesystem()
        return f"{base}/{name}"

    def _version_numbers(self, model_dir: str) -> list[int]:
        fs, _ = self._filesystem()
        try:
            entries = fs.ls(model_dir, detail=True)
        except FileNotFoundError:
            return []
        numbers = [
            int(n)
            for entry in entries
            if entry["type"] == "directory" and (n := _basename(entry["name"])).isdigit()
        ]
        return sorted(numbers)

    def _read_version(self, name: str, number: int) -> StoreVersion | None:
        fs, _ = self._filesystem()
        version_dir = f"{self._model_dir(name)}/{number}"
        try:
            raw = json.loads(fs.cat_file(f"{version_dir}/{METADATA_FILE}"))
        except FileNotFoundError:
            if not fs.isdir(self._model_dir(name)):
                raise ModelError(self._unknown_model(name)) from None
            return None
        except ValueError as exc:
            raise ModelError(
                f"model store {self.root}: {version_dir}/{METADATA_FILE} is not valid JSON ({exc}); "
                f"remove the version with: inferline models remove {name} {number}"
            ) from None
        return StoreVersion(
            name=name,
            version=number,
            uri=self._display(f"{version_dir}/{raw['file']}"),
            sha256=str(raw.get("sha256", "")),
            framework=str(raw.get("framework", "")),
            inputs=list(raw.get("inputs") or []),
            created=str(raw.get("created", "")),
            metadata=dict(raw.get("metadata") or {}),
        )

    def _claim_version(self, name: str) -> int:
        # The next number above every version dir and the high-water mark; claiming it
        # with an exclusive mkdir makes concurrent local adds get distinct numbers.
        fs, _ = self._filesystem()
        model_dir = self._model_dir(name)
        fs.makedirs(model_dir, exist_ok=True)
        last = max([0, *self._version_numbers(model_dir)])
        try:
            text = fs.cat_file(f"{model_dir}/{COUNTER_FILE}").decode("utf-8").strip()
            last = max(last, int(text)) if text.isdigit() else last
        except FileNotFoundError:
            pass
        number = last + 1
        while True:
            version_dir = f"{model_dir}/{number}"
            if self._is_local():
                try:
                    os.mkdir(version_dir)
                    break
                except FileExistsError:
                    number += 1
                    continue
            if not fs.exists(version_dir):
                fs.makedirs(version_dir, exist_ok=True)
                break
            number += 1
        self._write_text(f"{model_dir}/{COUNTER_FILE}", f"{number}\n")
        return number

    def _write_text(self, path: str, text: str) -> None:
        fs, _ = self._filesystem()
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        with fs.open(partial, "wb") as handle:
            handle.write(text.encode("utf-8"))
        fs.mv(partial, path)

    def _unknown_model(self, name: str) -> str:
        names = self.names()
        have = f"have: {', '.join(names)}" if names else "the store is empty"
        return (
            f"model store {self.root}: no model {name!r} ({have}); "
            f"add it with: inferline models add {name} FILE --store {self.root}"
        )


def load_store_version(
    found: StoreVersion,
    *,
    framework: str | None = None,
    inputs: list[str] | None = None,
    handler_options: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load one `StoreVersion` with its framework's handler.

    The handler gets the options stored in the version's metadata (see `HANDLER_OPTIONS`);
    `handler_options` that are not None (a pipeline spec's) override them.
    """
    framework = framework or found.framework
    options = {**stored_options(found, framework)}
    options.update({k: v for k, v in (handler_options or {}).items() if v is not None})
    handler = handler_for(found.uri, framework=framework, options=options)
    stored_inputs = list(found.inputs)
    transform = found.metadata.get("transform")
    if transform is not None:
        # CREATE MODEL ... TRANSFORM: the batch's raw columns go through it (models/transformed.py).
        from inferline.models.transformed import with_transform

        where = f"model {found.name}/{found.version}"
        transformed = with_transform(handler, transform, features=stored_inputs, where=where)
        handler, stored_inputs = transformed, transformed.transform.columns
    model = handler.load(found.uri)
    return LoadedModel(
        name=found.name,
        version=str(found.version),
        uri=found.uri,
        handler=handler,
        model=model,
        inputs=list(inputs) if inputs else stored_inputs,
        metadata=dict(found.metadata),
    )


def stored_options(found: StoreVersion, framework: str) -> dict[str, Any]:
    """The handler options a version's metadata holds that `framework`'s handler takes
    (`outputs` names a torch/Keras model's outputs, selects a TensorFlow/TFLite model's)."""
    accepted = handler_parameters(framework)
    metadata = found.metadata
    options = {key: metadata[key] for key in HANDLER_OPTIONS if key in metadata and key in accepted}
    if found.metadata.get("outputs") and "named_outputs" in accepted:
        options["named_outputs"] = [str(name) for name in found.metadata["outputs"]]
    return options


def output_names(value: Any, *, where: str) -> list[str]:
    """The `outputs` metadata as a list of names: given as a list, or as text `a,b`.

    Example:
        >>> output_names("price, embedding", where="model m")
        ['price', 'embedding']
    """
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ModelError(
            f"{where}: metadata outputs={value!r}; expected output names, e.g. outputs=price,embedding"
        )
    return [n.strip() for n in names]


def as_record(version: StoreVersion) -> dict[str, Any]:
    """A version as a plain dict (for JSON output and HTTP responses)."""
    return asdict(version)


def _check_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise ModelError(
            f"model name {name!r}: expected letters, digits, '.', '_' or '-' (not starting with "
            "a dot or dash), e.g. iris or iris-v2"
        )


def _copy(src: Any, dst: Any, digest: Any) -> None:
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)


def _folder_files(uri: str) -> list[tuple[str, Callable[[], Any]]] | None:
    """(relative path, opener) for every file under `uri` when it is a folder, else None."""
    try:
        fs, _, (root,) = fsspec.get_fs_token_paths(uri)
        if not fs.isdir(root):
            return None
        root = root.rstrip("/")
        paths = sorted(fs.find(root))
    except (OSError, ValueError):
        return None
    return [(path[len(root) + 1 :], functools.partial(fs.open, path, "rb")) for path in paths]


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
