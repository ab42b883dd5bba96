"""`inferline models ...`: add, list, inspect, pin and remove model versions in a store."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from inferline.errors import InferlineError
from inferline.models.store import ModelStore, StoreVersion, as_record, default_store

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    out.width = 160

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Store folder or URI (default: $INFERLINE_STORE or model_store)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    models = typer.Typer(
        no_args_is_help=True, help="Manage model versions in a model store (add, list, pin, ...)."
    )

    @models.command("add")
    def add(
        name: Annotated[str, typer.Argument(help="Model name, e.g. iris (omit for a .mar: its manifest's).")],
        file: Annotated[
            str | None, typer.Argument(help="Model file (path or URI) to copy in.", show_default=False)
        ] = None,
        store: StoreOption = None,
        framework: Annotated[
            str | None, typer.Option(help="sklearn, onnx, torch, keras (default: from the suffix).")
        ] = None,
        inputs: Annotated[
            str | None, typer.Option(help="Input column names, comma-separated: a,b,c.")
        ] = None,
        outputs: Annotated[
            str | None,
            typer.Option(
                help="Output names, comma-separated: a torch/Keras model's outputs in order, or "
                "the TensorFlow/TFLite outputs to give (stored as metadata outputs)."
            ),
        ] = None,
        meta: Annotated[
            list[str] | None, typer.Option("--meta", help="Metadata key=value (repeatable).")
        ] = None,
    ) -> None:
        """Copy FILE into the store as the next version of NAME (`models add x.mar`: the archive's)."""
        if file is None:
            name, file = archive_name(name), name
        names = [c.strip() for c in inputs.split(",") if c.strip()] if inputs else None
        metadata = parse_meta(meta or [])
        if outputs is not None:
            metadata["outputs"] = outputs
        check_hooks(name, metadata)
        added = _store(store).add(name, file, framework=framework, inputs=names, metadata=metadata)
        out.print(f"added {added.model_id} ({added.framework}, sha256 {added.sha256[:12]}) at {added.uri}")

    @models.command("list")
    def list_(store: StoreOption = None, json_: JsonOption = False) -> None:
        """Every model in the store with its current version."""
        the_store = _store(store)
        rows: list[dict[str, Any]] = []
        for name in the_store.names():
            versions = the_store.versions(name)
            pinned = the_store.pinned(name)
            current = _current(the_store, name, versions, pinned)
            rows.append(
                {
                    "name": name,
                    "versions": len(versions),
                    "current": current.version if current else None,
                    "pinned": pinned,
                    "framework": current.framework if current else None,
                    "created": current.created if current else None,
                }
            )
        if json_:
            out.print(json.dumps(rows), markup=False)
            return
        if not rows:
            out.print(f"no models in {the_store.root}; add one with: inferline models add NAME FILE")
            return
        table = Table(title=f"models in {the_store.root}")
        for column in ("name", "versions", "current", "pinned", "framework", "created"):
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if row[c] is None else str(row[c]) for c in row))
        out.print(table)

    @models.command("versions")
    def versions(
        name: Annotated[str, typer.Argument(help="Model name.")],
        store: StoreOption = None,
        json_: JsonOption = False,
    ) -> None:
        """Every version of NAME, oldest first; * marks the current one."""
        the_store = _store(store)
        found = the_store.versions(name)
        pinned = the_store.pinned(name)
        current = _current(the_store, name, found, pinned)
        if json_:
            out.print(json.dumps([as_record(v) for v in found]), markup=False)
            return
        table = Table(title=f"{name} in {the_store.root}" + (f" (pinned to {pinned})" if pinned else ""))
        for column in ("", "version", "file", "framework", "inputs", "sha256", "created", "metadata"):
            table.add_column(column)
        for v in found:
            table.add_row(
                "*" if current is not None and v.version == current.version else "",
                str(v.version),
                v.uri.rsplit("/", 1)[-1],
                v.framework,
                ",".join(v.inputs),
                v.sha256[:12],
                v.created,
                json.dumps(v.metadata) if v.metadata else "",
            )
        out.print(table)

    @models.command("pin")
    def pin(
        name: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version number to serve.")],
        store: StoreOption = None,
    ) -> None:
        """Serve VERSION of NAME (pipelines and servers that watch swap to it) until unpinned."""
        _store(store).pin(name, version)
        out.print(f"pinned {name}/{version}")

    @models.command("unpin")
    def unpin(name: Annotated[str, typer.Argument(help="Model name.")], store: StoreOption = None) -> None:
        """Serve the newest version of NAME again."""
        the_store = _store(store)
        the_store.unpin(name)
        out.print(f"unpinned {name}; current is {name}/{the_store.current(name).version}")

    @models.command("remove")
    def remove(
        name: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int | None, typer.Argument(help="Version (default: the whole model).")] = None,
        store: StoreOption = None,
    ) -> None:
        """Delete one version of NAME, or all of it."""
        _store(store).remove(name, version)
        out.print(f"removed {name}" + (f"/{version}" if version is not None else " (all versions)"))

    app.add_typer(models, name="models")


def check_hooks(name: str, metadata: dict[str, Any]) -> None:
    """Open `handler=`/`labels=`/`top_k=` now, so a typo fails at add and not at serve time."""
    if not any(metadata.get(key) for key in ("handler", "labels", "top_k")):
        return
    from inferline.models.hooks import ModelHooks

    top_k = metadata.get("top_k")
    if top_k is not None and not isinstance(top_k, int):
        raise InferlineError(f"models add {name}: --meta top_k={top_k}; expected a whole number")
    ModelHooks(
        str(metadata["handler"]) if metadata.get("handler") else None,
        labels=str(metadata["labels"]) if metadata.get("labels") else None,
        top_k=top_k,
        where=f"models add {name}: --meta",
    ).open()


def archive_name(file: str) -> str:
    """The model name a `.mar` archive's manifest gives (`models add x.mar` without NAME)."""
    if not file.lower().endswith(".mar"):
        raise InferlineError(
            f"models add {file}: expected NAME FILE (only a .mar archive names its own model)"
        )
    from inferline.models.mar import read_manifest

    name = read_manifest(file)["model"].get("modelName")
    if not isinstance(name, str) or not name:
        raise InferlineError(f"model archive {file}: its manifest has no modelName; pass NAME FILE")
    return name


def parse_meta(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as YAML scalars (`batch_size=32` is an int)."""
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InferlineError(f"--meta {item!r}: expected key=value, e.g. --meta batch_size=32")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        meta[key.strip()] = value
    return meta


def _store(root: str | None) -> ModelStore:
    return ModelStore(root or default_store())


def _current(
    store: ModelStore, name: str, versions: list[StoreVersion], pinned: int | None
) -> StoreVersion | None:
    if pinned is not None:
        return next((v for v in versions if v.version == pinned), None)
    return versions[-1] if versions else None
