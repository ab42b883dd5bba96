"""The pipeline spec: YAML or a dict -> validated dataclasses, with one-line errors.

Paths in a spec are relative to the current directory (as with most CLIs), so
`inferline run examples/iris/pipeline.yaml` is run from the project root.

Example:
    >>> spec = parse_spec({
    ...     "name": "iris",
    ...     "source": {"kind": "csv", "path": "data/*.csv"},
    ...     "model": {"name": "iris", "uri": "models/*.joblib", "inputs": ["a", "b"]},
    ...     "sink": {"kind": "parquet", "path": "out.parquet"},
    ... })
    >>> spec.batch.max_size
    4096
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferline.errors import SpecError

SOURCE_KINDS = ("csv", "jsonl", "parquet", "images", "objects", "table", "topic", "pubsub", "kafka")
SINK_KINDS = ("duckdb", "parquet", "jsonl", "csv", "topic", "bigquery")
FILE_SINK_KINDS = ("parquet", "jsonl", "csv")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SourceSpec(_Spec):
    """Where rows come from: files, images, objects, a table or a topic."""

    kind: str
    path: str | None = None
    url: str | None = None
    topic: str | None = None
    table: str | None = None
    resize: list[int] | None = None
    mode: str | None = None
    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: str | None = None
    load: str | None = None
    workers: int | None = None
    group: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {value!r}; expected one of {', '.join(SOURCE_KINDS)}")
        return value

    @model_validator(mode="after")
    def _has_location(self) -> SourceSpec:
        if self.kind in ("csv", "jsonl", "parquet", "images", "objects") and not self.path:
            raise ValueError(f"source kind {self.kind!r} needs path: (a file, glob or URI)")
        return self


class ModelSpec(_Spec):
    """One model: a name plus a URI/glob or a store; framework detected from the file."""

    name: str
    uri: str | None = None
    store: str | None = None
    url: str | None = None
    framework: str | None = None
    # A list of columns, or {model input name: column} for a model with named inputs.
    inputs: list[str] | str | dict[str, str] | None = None
    watch: bool = False
    watch_interval: float = Field(default=1.0, gt=0)
    model_class: str | None = None
    model_params: dict[str, Any] = Field(default_factory=dict)
    device: str = "cpu"
    signature: str | None = None  # TensorFlow SavedModel signature (default serving_default)
    task: str | None = None  # Hugging Face folders: text-classification, feature-extraction, ...
    handler: str | None = None
    labels: str | None = None
    top_k: int | None = None
    output: str | None = None
    outputs: list[str] | None = None  # names of a torch/Keras model's several outputs, in order
    scores: bool = True
    version: str | int | None = None
    auth_env: str | None = None
    timeout: float | None = None
    # Remote models (framework: remote, url:): rows per request (default batch.max_size),
    # retries on connection errors/5xx, requests in flight, and kserve-v2/torchserve protocol.
    max_batch: int | None = Field(default=None, gt=0)
    retries: int = Field(default=3, ge=0)
    concurrency: int = Field(default=4, gt=0)
    protocol: str | None = None

    @model_validator(mode="after")
    def _has_location(self) -> ModelSpec:
        if not (self.uri or self.store or self.url):
            raise ValueError(f"model {self.name!r} needs uri: (a file or glob) or store:")
        if self.url and self.framework is None:
            self.framework = "remote"
        if self.url and self.watch:
            raise ValueError(
                f"model {self.name!r}: watch: needs uri: or store:; a url: model is what its server serves"
            )
        if self.protocol is not None and self.protocol not in ("v2", "torchserve"):
            raise ValueError(f"model {self.name!r}: protocol must be v2 or torchserve, got {self.protocol!r}")
        return self

    @property
    def input_columns(self) -> list[str]:
        if self.inputs is None:
            return []
        if isinstance(self.inputs, dict):
            return list(self.inputs.values())
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class SinkSpec(_Spec):
    """Where results go: a DuckDB table, a file, or a topic."""

    kind: str
    path: str | None = None
    table: str | None = None
    url: str | None = None
    topic: str | None = None
    split: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in SINK_KINDS:
            raise ValueError(f"unknown sink kind {value!r}; expected one of {', '.join(SINK_KINDS)}")
        return value

    @model_validator(mode="after")
    def _has_location(self) -> SinkSpec:
        if self.kind in ("duckdb", *FILE_SINK_KINDS) and not self.path:
            raise ValueError(f"sink kind {self.kind!r} needs path:")
        return self

    def describe(self) -> str:
        if self.kind == "duckdb":
            return f"{self.path} table {self.table}"
        if self.kind == "topic":
            return f"topic {self.topic} at {self.url}"
        return str(self.path or self.table)


class BatchSpec(_Spec):
    """Micro-batching: a batch closes at `max_size` rows or after `max_wait_ms`."""

    max_size: int = Field(default=4096, gt=0)
    max_wait_ms: float = Field(default=50, ge=0)


_UNITS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
WINDOW_KINDS = ("fixed", "sliding", "session")


def parse_duration(value: Any, *, where: str) -> int:
    """A duration such as `60s`, `500ms`, `5m`, `1h` or a number of seconds, in microseconds."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a duration such as 60s, 5m or 500ms, got {value!r}")
    if isinstance(value, int | float):
        micros = round(float(value) * 1_000_000)
    else:
        text = str(value).strip().lower()
        unit = next((u for u in ("ms", "s", "m", "h", "d") if text.endswith(u)), None)
        number = text[: -len(unit)] if unit else text
        try:
            micros = round(float(number) * _UNITS[unit or "s"])
        except ValueError:
            raise ValueError(
                f"{where}: expected a duration such as 60s, 5m or 500ms, got {value!r}"
            ) from None
    if micros < 0:
        raise ValueError(f"{where}: a duration must not be negative, got {value!r}")
    return micros


class WindowSpec(_Spec):
    """`window:` — aggregates of the result rows over fixed, sliding or session windows.

    Durations are kept as given and read in microseconds (`size_us`, ...).
    """

    kind: str
    size: str | int | float | None = None
    every: str | int | float | None = None
    gap: str | int | float | None = None
    time: str | None = None
    allowed_lateness: str | int | float = 0
    group_by: list[str] = Field(default_factory=list)
    aggregates: dict[str, str]
    emit: str = "on_close"
    sink: SinkSpec
    state: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WindowSpec:
        if self.kind not in WINDOW_KINDS:
            raise ValueError(f"unknown window kind {self.kind!r}; expected one of {', '.join(WINDOW_KINDS)}")
        if self.kind == "session":
            if self.gap is None:
                raise ValueError("a session window needs gap: (e.g. gap: 30s)")
            if self.size is not None or self.every is not None:
                raise ValueError("a session window takes gap:, not size: or every:")
        else:
            if self.size is None:
                raise ValueError(f"a {self.kind} window needs size: (e.g. size: 60s)")
            if self.kind == "fixed" and self.every is not None:
                raise ValueError("every: is for sliding windows; a fixed window takes size: only")
            if self.kind == "sliding" and self.every is None:
                raise ValueError("a sliding window needs every: (e.g. size: 60s, every: 10s)")
        for name in ("size", "every", "gap", "allowed_lateness"):
            value = getattr(self, name)
            if value is not None:
                micros = parse_duration(value, where=name)
                if name != "allowed_lateness" and micros == 0:
                    raise ValueError(f"{name}: must be longer than 0, got {value!r}")
        if self.kind == "sliding" and self.every_us > self.size_us:
            raise ValueError(f"every: {self.every} is longer than size: {self.size}; rows would be missed")
        if not self.aggregates:
            raise ValueError('aggregates: needs at least one, e.g. {n: "count(*)"}')
        if self.emit != "on_close":
            if not self.emit.startswith("every "):
                raise ValueError(f"emit: expected on_close or 'every <duration>', got {self.emit!r}")
            if parse_duration(self.emit[len("every ") :], where="emit") == 0:
                raise ValueError("emit: every needs a duration longer than 0")
            if self.kind == "session":
                raise ValueError("emit: early results are for fixed and sliding windows; use on_close")
        if self.sink.kind == "duckdb" and not self.sink.table:
            raise ValueError("window.sink of kind duckdb needs table:")
        return self

    @property
    def size_us(self) -> int:
        return parse_duration(self.size if self.size is not None else self.gap, where="size")

    @property
    def every_us(self) -> int:
        return parse_duration(self.every, where="every") if self.every is not None else self.size_us

    @property
    def gap_us(self) -> int:
        return parse_duration(self.gap, where="gap") if self.gap is not None else 0

    @property
    def lateness_us(self) -> int:
        return parse_duration(self.allowed_lateness, where="allowed_lateness")

    @property
    def emit_every(self) -> float | None:
        """Seconds between early results, or None (results on close only)."""
        if self.emit == "on_close":
            return None
        return parse_duration(self.emit[len("every ") :], where="emit") / 1_000_000


class PipelineSpec(_Spec):
    """A whole pipeline: source -> [steps] -> model(s) -> [output mapping] -> sink."""

    name: str = "pipeline"
    source: SourceSpec
    model: ModelSpec | None = None
    models: list[ModelSpec] | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list)
    key: str | None = None
    keep: list[str] | None = None
    output: dict[str, Any] | None = None
    sink: SinkSpec
    dead_letter: SinkSpec | str | bool | None = None
    batch: BatchSpec = Field(default_factory=BatchSpec)
    window: WindowSpec | None = None
    origin: str = Field(default="<dict>", exclude=True)

    @model_validator(mode="after")
    def _one_model_form(self) -> PipelineSpec:
        if self.model is not None and self.models is not None:
            raise ValueError("give either model: or models:, not both")
        if self.sink.kind == "duckdb" and not self.sink.table:
            self.sink.table = _default_table(self.name)
        for model in self.all_models:
            if model.url and model.max_batch is None:
                model.max_batch = self.batch.max_size
        return self

    @property
    def all_models(self) -> list[ModelSpec]:
        if self.models is not None:
            return list(self.models)
        return [self.model] if self.model is not None else []

    def dead_letter_spec(self) -> SinkSpec | None:
        """The dead-letter sink: explicit, or `<table>_errors` / `<file>_errors.jsonl`."""
        value = self.dead_letter
        if value is False:
            return None
        if isinstance(value, SinkSpec):
            return value
        if isinstance(value, str):
            if self.sink.kind == "duckdb" and not _looks_like_path(value):
                return SinkSpec(kind="duckdb", path=self.sink.path, table=value)
            return SinkSpec(kind=_kind_from_suffix(value), path=value)
        if self.sink.kind == "duckdb":
            return SinkSpec(kind="duckdb", path=self.sink.path, table=f"{self.sink.table}_errors")
        if self.sink.kind in FILE_SINK_KINDS and self.sink.path:
            stem = os.path.splitext(self.sink.path)[0]
            return SinkSpec(kind="jsonl", path=f"{stem}_errors.jsonl")
        return SinkSpec(kind="jsonl", path=f"{_default_table(self.name)}_errors.jsonl")


def _default_table(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "pipeline"
    return f"{cleaned}_predictions"


def _looks_like_path(value: str) -> bool:
    return "/" in value or "." in value


def _kind_from_suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix in FILE_SINK_KINDS:
        return suffix
    if suffix in ("duckdb", "db"):
        return "duckdb"
    return "jsonl"


def parse_spec(raw: Any, *, origin: str = "<dict>") -> PipelineSpec:
    """Validate a spec given as a dict; errors name `origin` and the field."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"{origin}: expected a mapping with source:, model: and sink:, got {type(raw).__name__}"
        )
    try:
        spec = PipelineSpec.model_validate({**raw, "origin": origin})
    except ValidationError as exc:
        raise SpecError(_one_line(origin, exc)) from None
    return spec


def load_spec(path: str, overrides: list[str] | None = None) -> PipelineSpec:
    """Read a YAML spec, apply `dotted.key=value` overrides, validate.

    Example:
        >>> spec = load_spec("examples/iris/pipeline.yaml", ["batch.max_size=100"])  # doctest: +SKIP
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise SpecError(f"{path}: pipeline file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, expected a pipeline YAML file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}:{where}: malformed YAML: {problem}") from None
    for override in overrides or []:
        raw = apply_override(raw if isinstance(raw, dict) else {}, override, origin=path)
    return parse_spec(raw, origin=path)


def apply_override(raw: dict[str, Any], override: str, *, origin: str = "--set") -> dict[str, Any]:
    """Set `a.b.c=value` in a nested dict; the value is parsed as a YAML scalar."""
    if "=" not in override:
        raise SpecError(f"--set {override!r}: expected dotted.key=value, e.g. batch.max_size=1000")
    dotted, _, text = override.partition("=")
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise SpecError(f"--set {override!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value
    return raw


def _one_line(origin: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        parts.append(f"{loc}: {message}" if loc else message)
    return f"{origin}: " + "; ".join(parts)
