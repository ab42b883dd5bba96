"""`serve --ts-config config.properties`: TorchServe's configuration file, read as TorchServe does.

A Java properties file (`key=value` or `key: value`, `#`/`!` comments, `\\` continues a line).
The keys inferline takes, by TorchServe's names:

    inference_address=http://0.0.0.0:8080        host and port of the inference API
    management_address=http://127.0.0.1:8081     its own port: management answers only there
    metrics_address=http://127.0.0.1:8082        its own port: /metrics answers only there
    model_store=/models                          a folder of .mar archives
    load_models=all | m.mar,n=n.mar | standalone which archives to serve (standalone: none)
    default_workers_per_model=2                  model calls at once per model
    job_queue_size=100                           requests waiting per model before a 503
    max_request_size=6553500                     largest body in bytes
    models={"mnist": {"1.0": {"batchSize": 8, "maxBatchDelay": 50, "minWorkers": 1, "maxWorkers": 2}}}
    grpc_inference_port=7070, grpc_management_port=7071   TorchServe's gRPC APIs

Command-line flags win over the file, as in TorchServe. Other keys are listed in one warning.

Example:
    >>> read_ts_config("config.properties").port  # doctest: +SKIP
    8080
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from inferline.errors import InferlineError

if TYPE_CHECKING:
    from inferline.commands.vertex import Serving
    from inferline.serve.models import BatchSettings

KNOWN = (
    "inference_address",
    "management_address",
    "metrics_address",
    "model_store",
    "load_models",
    "default_workers_per_model",
    "job_queue_size",
    "max_request_size",
    "models",
    "grpc_inference_port",
    "grpc_management_port",
)


@dataclass(frozen=True)
class ModelConfig:
    """One model's entry of `models=`: TorchServe's batchSize, maxBatchDelay (ms) and workers."""

    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    min_workers: int | None = None
    max_workers: int | None = None


@dataclass(frozen=True)
class TsConfig:
    """What a config.properties sets; None: not set there."""

    host: str | None = None
    port: int | None = None
    management_host: str | None = None
    management_port: int | None = None
    metrics_host: str | None = None
    metrics_port: int | None = None
    model_store: str | None = None
    load_models: list[str] | None = None
    workers: int | None = None
    max_queue: int | None = None
    max_body: int | None = None
    models: dict[str, ModelConfig] = field(default_factory=dict)
    grpc_inference_port: int | None = None
    grpc_management_port: int | None = None
    ignored: list[str] = field(default_factory=list)


def read_properties(path: str) -> dict[str, str]:
    """A Java properties file as a dict (the last value of a repeated key wins)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise InferlineError(f"serve: --ts-config {path}: no such file") from None
    except OSError as exc:
        raise InferlineError(f"serve: --ts-config {path}: cannot read it ({exc.strerror or exc})") from None
    out: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        key, value = (line[:cut], line[cut + 1 :]) if cut > 0 else (line, "")
        out[key.strip()] = value.strip()
    return out


def read_ts_config(path: str) -> TsConfig:
    """The settings of TorchServe's config.properties at `path`, checked."""
    props = read_properties(path)
    where = f"serve: --ts-config {path}"
    values: dict[str, Any] = {"ignored": sorted(key for key in props if key not in KNOWN)}
    for key, prefix in (
        ("inference_address", ""),
        ("management_address", "management_"),
        ("metrics_address", "metrics_"),
    ):
        if key in props:
            values[f"{prefix}host"], values[f"{prefix}port"] = _address(props[key], key, where)
    if "model_store" in props:
        values["model_store"] = props["model_store"]
    if "load_models" in props:
        entries = [entry.strip() for entry in props["load_models"].split(",") if entry.strip()]
        values["load_models"] = [] if entries in ([], ["standalone"]) else entries
    for key, name, low in (
        ("default_workers_per_model", "workers", 0),
        ("job_queue_size", "max_queue", 1),
        ("max_request_size", "max_body", 1),
        ("grpc_inference_port", "grpc_inference_port", 1),
        ("grpc_management_port", "grpc_management_port", 1),
    ):
        if key in props:
            values[name] = _whole(props[key], key, where, low)
    if "models" in props:
        values["models"] = _models(props["models"], where)
    return TsConfig(**values)


def _address(text: str, key: str, where: str) -> tuple[str, int]:
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        raise InferlineError(
            f"{where}: {key}={text}; inferline serves plain http (put a TLS proxy in front for https)"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise InferlineError(f"{where}: {key}={text}; expected http://HOST:PORT, e.g. http://127.0.0.1:8080")
    return parts.hostname, port


def _whole(text: str, key: str, where: str, low: int) -> int:
    if not text.isdigit() or int(text) < low:
        raise InferlineError(f"{where}: {key}={text!r}; expected a whole number of at least {low}")
    return int(text)


FIELDS = {
    "batchSize": "batch_size",
    "maxBatchDelay": "max_batch_delay_ms",
    "minWorkers": "min_workers",
    "maxWorkers": "max_workers",
}


def _models(text: str, where: str) -> dict[str, ModelConfig]:
    """`models={"name": {"version": {"batchSize": 4, ...}}}`: the first version's settings per model."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InferlineError(f"{where}: models is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise InferlineError(
            f'{where}: models must map names to versions, like {{"mnist": {{"1.0": {{"batchSize": 4}}}}}}'
        )
    out = {}
    for name, versions in parsed.items():
        entry = next((v for v in versions.values() if isinstance(v, dict)), {})
        settings: dict[str, Any] = {}
        for key, attr in FIELDS.items():
            value = entry.get(key)
            if value is None:
                continue
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (1 if key == "batchSize" else 0)
            ):
                raise InferlineError(f"{where}: models: {name}: {key}={value!r}; expected a whole number")
            settings[attr] = value
        out[str(name)] = ModelConfig(**settings)
    return out


def merged(given: Serving, config: TsConfig) -> Serving:
    """The command line's choices, completed by the config file's (flags win, as in TorchServe).

    Archives from a config's `model_store` load only as `load_models` says (TorchServe loads
    none without it); `--model-store` on the command line alone still serves them all.
    """
    from dataclasses import replace

    models = given.models
    if not models and given.model_store is None and config.model_store is not None:
        models = config.load_models or ["standalone"]
    elif not models and config.load_models is not None:
        models = config.load_models or ["standalone"]
    return replace(
        given,
        host=given.host or config.host,
        port=given.port or config.port,
        models=models,
        model_store=given.model_store if given.model_store is not None else config.model_store,
    )


def model_settings(config: TsConfig, base: BatchSettings) -> dict[str, BatchSettings]:
    """Each model of `models=` with its own batch size, delay and workers over `base`."""
    from dataclasses import replace

    out = {}
    for name, model in config.models.items():
        workers = model.min_workers if model.min_workers is not None else base.workers
        out[name] = replace(
            base,
            batch_size=model.batch_size or base.batch_size,
            max_batch_delay_ms=float(model.max_batch_delay_ms)
            if model.max_batch_delay_ms is not None
            else base.max_batch_delay_ms,
            workers=workers,
            max_workers=max(workers, model.max_workers or workers),
        )
    return out
