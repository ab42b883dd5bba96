"""Models behind an HTTP API: KServe v2 (`.../v2/models/NAME`) or TorchServe (`.../predictions/NAME`).

`load(url)` checks the endpoint (v2 metadata, or `/ping`) and learns the served version, so
`model_id` names what answered. `predict` sends a batch as requests of at most `batch_size`
rows, `concurrency` at a time, each with a `timeout`; connection errors, timeouts and 5xx are
retried with exponential backoff. The `Authorization` header comes from the environment
variable named by `auth_env` and never appears in a message.

A request that still fails raises `RemoteRequestFailed` (the engine bisects the batch to find
bad rows) or, when the server is unreachable or refuses every request (connection errors,
timeouts, 401/403/404, 502/503/504, 429), `RemoteUnavailable`: the engine dead-letters the
whole batch for this model at once instead of retrying row by row.

Example:
    >>> handler = RemoteHandler(timeout=5, retries=2, concurrency=4)
    >>> model = handler.load("http://127.0.0.1:8080/v2/models/iris")  # doctest: +SKIP
    >>> handler.predict(model, features).prediction  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from inferline.backoff import Backoff
from inferline.errors import ModelError, RemoteUnavailable, require
from inferline.models.base import Prediction

PROTOCOLS = ("v2", "torchserve")
RETRY_CAP_S = 5.0  # the longest wait between two tries of one request
# Answers that say "this server cannot serve you now", whatever the rows.
_UNAVAILABLE = (401, 403, 404, 429, 502, 503, 504)
_RETRY = (429, 500, 502, 503, 504)
_V2_TYPES = {"f": "FP", "i": "INT", "u": "UINT"}


class RemoteRequestFailed(RuntimeError):
    """One request failed in a way that may depend on its rows (engine bisects)."""


@dataclass
class RemoteModel:
    """What `load` returns: where the model is and what the server says it is."""

    url: str
    protocol: str
    name: str
    version: str
    base: str
    inputs: list[str]

    @property
    def shown(self) -> str:
        """The URL without credentials or query, for messages and `LoadedModel.uri`."""
        return redact(self.url)


def redact(url: str) -> str:
    """`url` without user:password or query string, safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_url(url: str, protocol: str | None = None) -> tuple[str, str, str, str | None]:
    """(protocol, base URL, model name, version or None) for a model endpoint URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(
            f"model {redact(url)}: url must be http(s)://host:port/v2/models/NAME or .../predictions/NAME"
        )
    segments = [s for s in parts.path.split("/") if s]
    found: tuple[str, int] | None = None
    for i in range(len(segments) - 1):
        if segments[i] == "v2" and segments[i + 1] == "models" and i + 2 < len(segments):
            found = ("v2", i)
            break
        if segments[i] == "predictions":
            found = ("torchserve", i)
            break
    if found is None:
        raise ModelError(
            f"model {redact(url)}: cannot tell the protocol from the path; expected "
            ".../v2/models/NAME[/versions/V] (KServe v2) or .../predictions/NAME[/V] (TorchServe)"
        )
    kind, i = found
    if protocol is not None and protocol != kind:
        raise ModelError(f"model {redact(url)}: protocol {protocol!r} does not match the URL path ({kind})")
    root = "/" + "/".join(segments[:i])
    base = urlunsplit((parts.scheme, parts.netloc, root.rstrip("/"), "", ""))
    rest = segments[i + 2 :] if kind == "v2" else segments[i + 1 :]
    name = rest[0] if kind == "torchserve" else segments[i + 2]
    if kind == "v2":
        version = rest[2] if len(rest) >= 3 and rest[1] == "versions" else None
    else:
        version = rest[1] if len(rest) >= 2 else None
    return kind, base, name, version


class RemoteHandler:
    """Runs a model on an HTTP inference server, batch by batch."""

    framework = "remote"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        concurrency: int = 4,
        auth_env: str | None = None,
        protocol: str | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.timeout = timeout if timeout is not None else 30.0
        self.retries = max(0, retries)
        # Waits between tries: `backoff` s, doubling, capped (0: retry at once).
        self.backoff = Backoff(backoff, max(backoff, RETRY_CAP_S)) if backoff > 0 else None
        self.concurrency = max(1, concurrency)
        self.auth_env = auth_env
        self.protocol = protocol
        # Requests wait on the network, not the CPU: let the engine keep several batches in flight.
        self.parallel_batches = self.concurrency
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._secret: str | None = None
        # Set while the server is known to be unreachable: one attempt per request, no backoff,
        # so a dead server costs one refused connection per batch until it answers again.
        self._down = False

    # --- lifecycle ------------------------------------------------------------------
    def load(self, uri: str) -> RemoteModel:
        httpx: Any = require("httpx", "remote")
        kind, base, name, version = parse_url(uri, self.protocol)
        headers = {}
        if self.auth_env:
            secret = os.environ.get(self.auth_env)
            if not secret:
                raise ModelError(
                    f"model {redact(uri)}: environment variable {self.auth_env} (auth_env) is not set; "
                    "export it with the token, e.g. 'Bearer abc...'"
                )
            self._secret = secret
            headers["Authorization"] = secret if " " in secret else f"Bearer {secret}"
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout,
                headers=headers,
                limits=httpx.Limits(max_connections=self.concurrency),
            )
        model = RemoteModel(uri, kind, name, version or "", base, [])
        self._describe(model)
        return model

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _describe(self, model: RemoteModel) -> None:
        """Check the endpoint answers and learn the served version and input names."""
        if model.protocol == "v2":
            path = f"{model.base}/v2/models/{model.name}"
            if model.version:
                path += f"/versions/{model.version}"
            meta = self._get_json(path)
            versions = [str(v) for v in meta.get("versions") or []]
            params = meta.get("parameters") or {}
            served = str(params.get("model_id", "")).rpartition("/")[2]
            model.version = model.version or served or (versions[-1] if versions else "") or "remote"
            features = params.get("features")
            if isinstance(features, list):
                model.inputs = [str(f) for f in features]
            return
        self._get_json(f"{model.base}/ping")
        # inferline serve (and KServe servers) also answer v2 metadata; plain TorchServe does not.
        try:
            meta = self._get_json(f"{model.base}/v2/models/{model.name}", quiet=True)
        except (RemoteUnavailable, RemoteRequestFailed, ModelError):
            meta = {}
        params = meta.get("parameters") or {}
        model.version = model.version or str(params.get("model_id", "")).rpartition("/")[2] or "remote"
        features = params.get("features")
        if isinstance(features, list):
            model.inputs = [str(f) for f in features]

    def _get_json(self, url: str, *, quiet: bool = False) -> dict[str, Any]:
        response = self._send("GET", url, None, retries=0 if quiet else self.retries)
        try:
            body = response.json()
        except ValueError:
            raise ModelError(f"model {redact(url)}: the server did not answer JSON") from None
        return body if isinstance(body, dict) else {}

    # --- predicting -----------------------------------------------------------------
    def predict(self, model: RemoteModel, inputs: np.ndarray) -> Prediction:
        inputs = np.asarray(inputs)
        if len(inputs) == 0:
            return Prediction(np.empty((0,)), None)
        size = self.batch_size or len(inputs)
        chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        if len(chunks) == 1:
            parts = [self._predict_chunk(model, chunks[0])]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="inferline-remote")
            parts = list(self._pool.map(lambda c: self._predict_chunk(model, c), chunks))
        prediction = np.concatenate([p.prediction for p in parts])
        scores = None
        if all(p.scores is not None for p in parts):
            scores = np.concatenate([p.scores for p in parts if p.scores is not None])
        return Prediction(prediction, scores)

    def _predict_chunk(self, model: RemoteModel, rows: np.ndarray) -> Prediction:
        if model.protocol == "v2":
            path = f"{model.base}/v2/models/{model.name}"
            if model.version and model.version != "remote" and "/versions/" in model.url:
                path += f"/versions/{model.version}"
            response = self._send("POST", path + "/infer", _v2_request(rows))
            prediction = _v2_answer(response.json(), len(rows), path)
        else:
            response = self._send("POST", model.url, {"instances": rows.tolist()})
            prediction = _torchserve_answer(response.json(), len(rows), model.url)
        return prediction

    def _send(self, method: str, url: str, body: Any, *, retries: int | None = None) -> Any:
        httpx: Any = require("httpx", "remote")
        if self._client is None:
            raise ModelError(f"model {redact(url)}: the remote handler is closed")
        attempts = 1 if self._down else 1 + (self.retries if retries is None else retries)
        shown = f"{method} {redact(url)}"
        problem = ""
        tried = 0
        for attempt in range(attempts):
            tried += 1
            if attempt and self.backoff is not None:
                time.sleep(self.backoff.delay(attempt))
            try:
                with self._slots:
                    response = self._client.request(method, url, json=body)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:
                problem = f"cannot connect ({type(exc).__name__})"
                continue
            if response.status_code < 400:
                self._down = False
                return response
            problem = f"HTTP {response.status_code}: {self._scrub(_error_text(response))}"
            if response.status_code not in _RETRY:
                break
        tries = f" after {tried} attempts" if tried > 1 else ""
        message = f"{shown} failed{tries}: {problem}"
        status = int(problem.split()[1].rstrip(":")) if problem.startswith("HTTP ") else None
        if status is None or status in _UNAVAILABLE:
            self._down = status is None
            raise RemoteUnavailable(message)
        raise RemoteRequestFailed(message)

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return str(response.text)[:200].strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:200]


def _v2_request(rows: np.ndarray) -> dict[str, Any]:
    array = np.asarray(rows)
    if array.dtype.kind not in _V2_TYPES:
        array = array.astype(np.float64)
    datatype = f"{_V2_TYPES[array.dtype.kind]}{array.dtype.itemsize * 8}"
    tensor = {"name": "input", "shape": list(array.shape), "datatype": datatype}
    tensor["data"] = array.reshape(-1).tolist()
    return {"inputs": [tensor]}


def _v2_answer(body: Any, n: int, url: str) -> Prediction:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise RemoteRequestFailed(f"POST {redact(url)}/infer: answer has no outputs")
    by_name = {str(o.get("name")): o for o in outputs if isinstance(o, dict)}
    first = by_name.get("predictions") or outputs[0]
    prediction = _v2_tensor(first, url)
    scores_spec = by_name.get("scores") or by_name.get("probabilities")
    scores = (
        _v2_tensor(scores_spec, url).astype(np.float64) if scores_spec is not first and scores_spec else None
    )
    if len(prediction) != n:
        raise RemoteRequestFailed(f"POST {redact(url)}/infer: {len(prediction)} predictions for {n} rows")
    return Prediction(prediction, scores)


def _v2_tensor(spec: dict[str, Any], url: str) -> np.ndarray:
    datatype = str(spec.get("datatype", "FP64"))
    data = spec.get("data", [])
    shape = spec.get("shape") or [len(data)]
    if datatype == "BYTES":
        array = np.asarray([str(v) for v in data], dtype=object)
    else:
        array = np.asarray(data, dtype=np.float64 if datatype.startswith("FP") else None)
        if datatype.startswith(("INT", "UINT")):
            array = array.astype(np.int64)
        elif datatype == "BOOL":
            array = array.astype(np.bool_)
    try:
        return array.reshape(shape)
    except ValueError:
        raise RemoteRequestFailed(
            f"POST {redact(url)}/infer: output {spec.get('name')!r} has {array.size} values for shape {shape}"
        ) from None


def _torchserve_answer(body: Any, n: int, url: str) -> Prediction:
    scores = None
    if isinstance(body, dict):
        predictions = body.get("predictions")
        if body.get("scores") is not None:
            scores = np.asarray(body["scores"], dtype=np.float64)
    else:
        predictions = body
    if not isinstance(predictions, list):
        raise RemoteRequestFailed(f"POST {redact(url)}: answer has no list of predictions")
    prediction = np.asarray(predictions)
    if len(prediction) != n:
        raise RemoteRequestFailed(f"POST {redact(url)}: {len(prediction)} predictions for {n} rows")
    return Prediction(prediction, scores)
