"""What an output path already holds, so that no output replaces a file of another kind.

A file sink (Parquet, JSONL, CSV), a DuckDB sink and `inferline report -o` each write one
kind of file. Before writing, `check_output` looks at the path: a name whose extension
says another kind (`warehouse.duckdb` for a Parquet sink), or an existing file whose first
bytes are another kind (a DuckDB database, a Parquet file, an HTML page, text...), is
refused with one line saying what the file is and what to pass instead. Nothing is ever
derived silently: the user sees the refusal and picks the path.

Example:
    >>> check_output("out/iris.parquet", "parquet", setting="--set sink.path={}")
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from inferline.errors import InferlineError, SinkError
from inferline.pipeline import PipelineSpec, SinkSpec

# The output kinds, each with the extensions it owns (the first one is suggested).
OWN_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq", ".parq"),
    "jsonl": (".jsonl", ".ndjson", ".json", ".jsonlines"),
    "csv": (".csv", ".tsv", ".txt"),
    "duckdb": (".duckdb", ".db", ".ddb"),
    "html": (".html", ".htm"),
}

# What an existing file's content may be, per output kind (see `identify`).
_ACCEPTS: dict[str, str] = {
    "parquet": "parquet",
    "jsonl": "json",
    "csv": "text",
    "duckdb": "duckdb",
    "html": "html",
}

_OUTPUT_NAMES = {
    "parquet": "Parquet output",
    "jsonl": "JSON Lines output",
    "csv": "CSV output",
    "duckdb": "a DuckDB database",
    "html": "an HTML report",
}

# Extensions that name some other kind of file than the outputs above.
_OTHER_EXTENSIONS: dict[str, str] = {
    ".sqlite": "a SQLite database",
    ".sqlite3": "a SQLite database",
    ".yaml": "a YAML file",
    ".yml": "a YAML file",
    ".py": "a Python file",
    ".md": "a Markdown file",
    ".onnx": "an ONNX model",
    ".joblib": "a joblib model",
    ".pkl": "a pickle",
    ".pt": "a PyTorch model",
    ".pth": "a PyTorch model",
    ".keras": "a Keras model",
    ".ubj": "an XGBoost model",
    ".bst": "an XGBoost model",
    ".model": "an XGBoost model",
    ".skops": "a scikit-learn model",
    ".h5": "an HDF5 file",
    ".png": "an image",
    ".jpg": "an image",
    ".jpeg": "an image",
    ".gif": "an image",
    ".zip": "a zip archive",
    ".gz": "a gzip file",
    ".pdf": "a PDF document",
}

_DESCRIPTIONS = {
    "parquet": "a Parquet file",
    "duckdb": "a DuckDB database",
    "sqlite": "a SQLite database",
    "html": "an HTML page",
    "json": "a JSON file",
    "text": "a text file",
    "image": "an image",
    "archive": "a zip or gzip archive",
    "pdf": "a PDF document",
    "binary": "a binary file",
    "directory": "a directory",
    "model": "a model file",
}

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "parquet"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"\x89PNG", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF8", "image"),
    (b"PK\x03\x04", "archive"),
    (b"\x1f\x8b", "archive"),
    (b"%PDF", "pdf"),
)


def identify(path: str) -> str | None:
    """The kind of what `path` holds: `parquet`, `duckdb`, `html`, `json`, `text`, ...;
    None when there is nothing there to lose (no such file, or an empty one)."""
    if os.path.isdir(path):
        return "directory"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return "binary"
    if not head:
        return None
    if head[8:12] == b"DUCK":
        return "duckdb"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"\x00" in head:
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the 4 KiB read is still text.
        if exc.start < len(head) - 3:
            return "binary"
        text = head[: exc.start].decode("utf-8")
    start = text.lstrip("\ufeff \t\r\n").lower()
    # Text models: XGBoost's JSON (`"learner"`), LightGBM's `tree` + `version=` header.
    if (start.startswith("{") and '"learner"' in start) or (start.startswith("tree") and "version=" in start):
        return "model"
    if start.startswith(("<!doctype html", "<html")):
        return "html"
    if start.startswith(("{", "[")):
        return "json"
    if start.startswith("<"):
        return "binary" if "<html" not in start else "html"
    return "text"


_KIND_FILES = {
    "parquet": "a Parquet file",
    "jsonl": "a JSON Lines file",
    "csv": "a CSV file",
    "duckdb": "a DuckDB database",
    "html": "an HTML page",
}


def _named(path: str) -> tuple[str, str] | None:
    """(kind or extension, description) of what the path's extension says it is."""
    ext = os.path.splitext(path)[1].lower()
    for kind, extensions in OWN_EXTENSIONS.items():
        if ext in extensions:
            return kind, _KIND_FILES[kind]
    return (ext, _OTHER_EXTENSIONS[ext]) if ext in _OTHER_EXTENSIONS else None


def suggest(path: str, kind: str) -> str:
    """`path` with the extension of `kind` (`warehouse.duckdb` -> `warehouse.parquet`)."""
    stem = os.path.splitext(path)[0] if _named(path) is not None else path
    suggestion = stem + OWN_EXTENSIONS[kind][0]
    if suggestion == path:
        suggestion = os.path.join(os.path.dirname(path), f"predictions{OWN_EXTENSIONS[kind][0]}")
    return suggestion


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def check_output(path: str, kind: str, *, setting: str = "--set sink.path={}") -> None:
    """Refuse (SinkError) to write `kind` output at `path` if that would replace, or name,
    a file of another kind. `setting` shows how the user sets the path (`-o {}`), for the
    hint. Remote URIs are not inspected."""
    if not is_local(path):
        return
    local = path.removeprefix("file://")
    what = _OUTPUT_NAMES[kind]
    hint = "pass " + setting.format(suggest(local, kind))
    found = identify(local)
    if found is not None and found != _ACCEPTS[kind]:
        raise SinkError(
            f"{path} is {_DESCRIPTIONS[found]}, not {what}; refusing to replace it: {hint} "
            "(or remove the file)"
        )
    named = _named(local)
    if named is not None and named[0] != kind:
        raise SinkError(f"{path} is named like {named[1]}, not {what}: {hint}")


def check_not_input(path: str, inputs: Iterable[str], *, setting: str = "--set sink.path={}") -> None:
    """Refuse to write over a file that this run reads."""
    if not is_local(path):
        return
    local = path.removeprefix("file://")
    if not os.path.exists(local):
        return
    for source in inputs:
        try:
            if os.path.samefile(local, source):
                raise SinkError(
                    f"{path} is an input of this run; refusing to replace it: pass "
                    + setting.format("ANOTHER_PATH")
                )
        except OSError:
            continue


def check_run_outputs(spec: PipelineSpec, *, stream: bool = False) -> None:
    """Before a run: its sink and dead-letter file may replace neither another kind of file
    nor one of the run's inputs, nor each other. A stream's file sinks are part directories
    (`io/parts.py`)."""
    from inferline.io.files import expand_paths
    from inferline.io.parts import check_part_dir

    outputs: list[tuple[SinkSpec, str]] = [(spec.sink, "--set sink.path={}")]
    dead = spec.dead_letter_spec()
    if dead is not None:
        outputs.append((dead, "--set dead_letter={}"))
    src = spec.source
    inputs: list[str] = []
    if src.kind in _FILE_SOURCES and src.path and is_local(src.path):
        try:
            inputs = [path for _, path, _ in expand_paths(src.path)]
        except InferlineError:
            inputs = []  # the source reports it, with its own message
    for sink, setting in outputs:
        if sink.path is None or sink.split or sink.kind not in OWN_EXTENSIONS:
            continue
        if stream and sink.kind != "duckdb":
            check_part_dir(sink.path, sink.kind, setting=setting)
            continue
        check_output(sink.path, sink.kind, setting=setting)
        check_not_input(sink.path, inputs, setting=setting)
    if dead is not None and dead.kind != "duckdb" and dead.path is not None and dead.path == spec.sink.path:
        raise SinkError(
            f"dead_letter {dead.path} is also the sink's path; pass --set dead_letter=ANOTHER_PATH.jsonl"
        )


_FILE_SOURCES = ("csv", "jsonl", "parquet", "images", "objects")
