"""Model names in SQL -> loaded models: the database's catalog first, then the model store.

Loaded models are cached per connection, so a query loads each model once, however many
chunks it predicts. `CREATE OR REPLACE MODEL` through the same connection drops the cached one.
"""

from __future__ import annotations

import threading

import duckdb

from inferline.errors import SqlError
from inferline.io.duckdb import quote
from inferline.models.base import LoadedModel
from inferline.sql.catalog import CatalogModel, get_model


class ModelResolver:
    """Finds and loads models by name for one connection.

    Example:
        >>> resolver = ModelResolver(con, store="model_store")  # doctest: +SKIP
        >>> resolver.get("ds.iris").model_id  # doctest: +SKIP
        'ds.iris/1'
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, store: str | None = None) -> None:
        self.store = store
        # Lookups run inside UDF calls, while the connection itself is busy with the query.
        self._cursor = con.cursor()
        # A cursor starts in the instance's default database, not the one `con` USEs (a
        # warehouse file is attached and USEd: io/warehouse.py); follow `con`.
        rows = con.execute("SELECT current_database(), current_schema()").fetchall()
        for database, schema in rows:
            self._cursor.execute(f"USE {quote(database)}.{quote(schema)}").fetchall()
        self._cache: dict[str, LoadedModel] = {}
        self._entries: dict[str, CatalogModel | None] = {}
        self._lock = threading.Lock()

    def entry(self, name: str) -> CatalogModel | None:
        """The catalog entry for `name`, if the database has one."""
        key = name.lower()
        if key not in self._entries:
            self._entries[key] = get_model(self._cursor, name)
        return self._entries[key]

    def get(self, name: str) -> LoadedModel:
        key = name.lower()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                cached = self._load(name)
                self._cache[key] = cached
        return cached

    def remember(self, name: str, loaded: LoadedModel) -> None:
        """Cache a model loaded elsewhere (CREATE MODEL loads it to check it)."""
        with self._lock:
            self._cache[name.lower()] = loaded

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name.lower(), None)
            self._entries.pop(name.lower(), None)

    def close(self) -> None:
        for loaded in self._cache.values():
            close = getattr(loaded.handler, "close", None)
            if close is not None:
                close()  # remote models hold an HTTP connection pool
        self._cache.clear()
        self._cursor.close()

    def _load(self, name: str) -> LoadedModel:
        entry = self.entry(name)
        if entry is not None:
            return load_catalog_model(entry)
        if self.store is not None:
            return self._load_from_store(self.store, name)
        raise SqlError(
            f"model {name!r} not found: register it with CREATE MODEL {name} "
            "OPTIONS(model_type='sklearn', model_path='models/*.joblib') or pass --store DIR"
        )

    def _load_from_store(self, store: str, name: str) -> LoadedModel:
        from inferline.models.store import ModelStore

        return ModelStore(store).load(name)


def load_catalog_model(entry: CatalogModel) -> LoadedModel:
    """Load the newest file matching a catalog entry's path."""
    from inferline.models.outputs import declared_output_mode
    from inferline.models.registry import list_versions, load_version
    from inferline.pipeline import ModelSpec

    if entry.framework == "remote":
        return _load_remote(entry)
    versions = list_versions(entry.path)
    if not versions:
        raise SqlError(f"model {entry.name}: no model file matches {entry.path}")
    spec = ModelSpec(
        name=entry.name,
        uri=entry.path,
        framework=entry.framework,
        inputs=entry.inputs or None,
        model_class=entry.model_class,
        model_params=entry.model_params,
        output=declared_output_mode(entry.outputs, entry.output_types),
    )
    newest = versions[-1]
    loaded = load_version(spec, newest.uri, newest.version)
    names: list[str] = getattr(loaded.handler, "output_names", lambda model: [])(loaded.model)
    if entry.outputs:
        loaded.metadata["outputs"] = list(entry.outputs)
        if len(names) > 1 and sorted(names) == sorted(entry.outputs) and hasattr(loaded.handler, "output"):
            # OUTPUT(...) naming each of the model's outputs names them; it declares no classifier.
            loaded.handler.output = None
    elif entry.framework in ("tensorflow", "tflite"):
        if len(names) == 1:
            # BigQuery answers an imported TensorFlow model's one output under its signature
            # name, as the model gives it (the ResNet tutorial's activation_49): no argmax.
            loaded.handler.output = "raw"  # type: ignore[attr-defined]
            loaded.metadata["outputs"] = names
    return loaded


def _load_remote(entry: CatalogModel) -> LoadedModel:
    """A `CREATE MODEL ... REMOTE` entry: the same RemoteHandler as pipelines' `url:` models."""
    from inferline.models.registry import load_remote
    from inferline.pipeline import ModelSpec

    url, _, fragment = entry.path.partition("#")
    auth_env = fragment.removeprefix("auth_env=") or None
    spec = ModelSpec(name=entry.name, url=url, auth_env=auth_env, inputs=entry.inputs or None)
    loaded = load_remote(spec)
    if entry.outputs:
        loaded.metadata["outputs"] = list(entry.outputs)
    return loaded
