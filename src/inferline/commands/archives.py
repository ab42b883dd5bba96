"""`serve --models` / `--model-store` as TorchServe takes them: `.mar` archives into a store.

`--models STORE` serves an inferline model store, as before. `--model-store DIR` is TorchServe's
folder of `.mar` archives, with `--models name=x.mar`, `--models x.mar` or `--models all`
(the default) picking which; `--models name=path/x.mar` works without `--model-store` too.
Archives are copied into a fresh store in a temporary folder (the archive names the model
and its version string), so every route, watcher and management call works on them alike.

Example:
    >>> archive_entries(["mnist=mnist.mar"], None)  # doctest: +SKIP
    [('mnist', 'mnist.mar')]
"""

from __future__ import annotations

import os
import tempfile

from inferline.errors import InferlineError

DEFAULT_STORE = "model_store"
STANDALONE = "standalone"  # TorchServe's load_models value for "load none"


def is_archive_entry(entry: str) -> bool:
    return entry in ("all", STANDALONE) or "=" in entry or entry.lower().endswith(".mar")


def archives_in(folder: str) -> list[str] | None:
    """The `.mar` files of a folder, a local path or any fsspec URI (`gs://bucket/mars`);
    None when it is not a folder."""
    if "://" not in folder:
        if not os.path.isdir(folder):
            return None
        return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".mar")]
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(folder)
        if not fs.isdir(path):
            return None
        names = sorted(str(name).rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(path, detail=False))
    except (ImportError, ValueError, OSError) as exc:
        raise InferlineError(f"serve: cannot list {folder} ({type(exc).__name__}: {exc})") from None
    return [f"{folder.rstrip('/')}/{name}" for name in names if name.endswith(".mar")]


def archive_entries(models: list[str], model_store: str | None) -> list[tuple[str | None, str]]:
    """`(name or None, archive path)` for each `--models` entry; `all`: every .mar of DIR."""
    found = archives_in(model_store) if model_store is not None else []
    if found is None:
        raise InferlineError(
            f"serve: --model-store {model_store} is not a folder (expected a folder of .mar files)"
        )
    entries = models or ["all"]
    out: list[tuple[str | None, str]] = []
    for entry in entries:
        if entry == STANDALONE:
            continue
        if entry == "all":
            if model_store is None:
                raise InferlineError("serve: --models all needs --model-store DIR (a folder of .mar files)")
            out += [(None, path) for path in found]
            continue
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = "", entry
        if model_store is not None and not os.path.isabs(path) and "://" not in path:
            path = (
                f"{model_store.rstrip('/')}/{path}"
                if "://" in model_store
                else os.path.join(model_store, path)
            )
        if "://" not in path and not os.path.isfile(path):
            raise InferlineError(f"serve: --models {entry}: archive {path} not found")
        out.append((name or None, path))
    return out


def store_for(models: list[str], model_store: str | None) -> str:
    """The store to serve: `--models STORE`, or a temporary one filled with the archives given."""
    if model_store is None and not any(is_archive_entry(m) for m in models):
        if len(models) > 1:
            raise InferlineError(
                f"serve: --models given {len(models)} stores ({', '.join(models)}); "
                "expected one store, or name=x.mar archives"
            )
        store = models[0] if models else DEFAULT_STORE
        if "://" not in store and not os.path.isdir(store):
            raise InferlineError(
                f"serve: --models {store}: no such model store; create it with "
                f"inferline models add NAME FILE --store {store}, or pass --model-store DIR for .mar files"
            )
        return store
    plain = [m for m in models if not is_archive_entry(m)]
    if plain:
        raise InferlineError(
            f"serve: --models {plain[0]} is a store, but other --models name .mar archives; "
            "serve a store or archives, not both"
        )
    from inferline.commands.models import archive_name
    from inferline.models.store import ModelStore

    root = tempfile.mkdtemp(prefix="inferline-store-")
    for name, path in archive_entries(models, model_store):
        ModelStore(root).add(name or archive_name(path), path)
    return root
