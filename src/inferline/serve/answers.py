"""Prediction answers as JSON bytes: any size without freezing the server, NaN as `null`.

`encode_answer` writes long lists and arrays a slice at a time: one `json.dumps` of a million
floats holds the GIL for a second on a busy machine, while slices of a few thousand let the
event loop in between when the encoding runs on a worker thread. JSON has no NaN or Infinity:
a model output that is not finite is written as `null` and counted, and the server adds an
`X-Inferline-Warning` header naming the model and how many values were replaced (answering
500 would throw away the finite predictions of every other row).

Example:
    >>> encode_answer({"predictions": np.array([1.0, np.nan])})
    (b'{"predictions":[1.0,null]}', 1)
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

SLICE = 4096  # elements per json.dumps call
_SCALARS = frozenset({str, int, float, bool, type(None)})
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _flat_encoder() -> Any:
    """`_dumps` for one flat object without `JSONEncoder.encode`'s Python layers (it builds a
    new C encoder per call): the C encoder made once, as `encode` makes it (~2.5x faster for a
    handler's `{"class": 3, "probability": 0.9}`). `_dumps` where the C encoder is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _dumps
    encoder = make(None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)

    def dumps(value: Any) -> str:
        return "".join(encoder(value, 0))

    return dumps


_flat_dumps = _flat_encoder()


def encode_answer(body: Any) -> tuple[bytes, int]:
    """`body` (dicts, lists, numpy arrays, JSON scalars) as JSON; and how many NaN/Inf became null."""
    if type(body) is dict and len(body) <= SLICE:
        for key, value in body.items():  # one small flat object (a handler's answer): one call
            if type(key) is not str or type(value) not in _SCALARS:
                break
        else:
            try:
                return _flat_dumps(body).encode(), 0
            except ValueError:  # NaN or Infinity
                pass
    parts: list[str] = []
    replaced = _encode(body, parts)
    return "".join(parts).encode(), replaced


def warning_header(model_id: str, replaced: int) -> dict[str, str]:
    if not replaced:
        return {}
    message = f"model {model_id} output {replaced} non-finite values (NaN/Infinity), sent as null"
    return {"X-Inferline-Warning": message}


def _encode(value: Any, parts: list[str]) -> int:
    if isinstance(value, dict):
        parts.append("{")
        replaced = 0
        for i, (key, item) in enumerate(value.items()):
            parts.append(("," if i else "") + _dumps(str(key)) + ":")
            replaced += _encode(item, parts)
        parts.append("}")
        return replaced
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _encode(value.item(), parts)
        return _encode_slices(value, parts)
    if isinstance(value, (list, tuple)):
        return _encode_slices(value, parts)
    if isinstance(value, np.generic):
        value = value.item()
    try:
        parts.append(_dumps(value))
        return 0
    except ValueError:  # a NaN or Infinity somewhere inside
        clean, replaced = _nulled(value)
        parts.append(_dumps(clean))
        return replaced


def _encode_slices(values: Any, parts: list[str]) -> int:
    parts.append("[")
    replaced = 0
    for start in range(0, len(values), SLICE):
        chunk = values[start : start + SLICE]
        if isinstance(chunk, np.ndarray):
            if chunk.dtype.kind in "fc" and not np.isfinite(chunk).all():
                bad = ~np.isfinite(chunk)
                replaced += int(bad.sum())
                chunk = chunk.astype(object)
                chunk[bad] = None
            chunk = chunk.tolist()
        elif any(isinstance(item, (dict, np.ndarray)) for item in chunk):
            if start:
                parts.append(",")
            for i, item in enumerate(chunk):
                if i:
                    parts.append(",")
                replaced += _encode(item, parts)
            continue
        text = ""
        try:
            text = _dumps(chunk)
        except ValueError:
            clean, count = _nulled(chunk)
            replaced += count
            text = _dumps(clean)
        if start:
            parts.append(",")
        parts.append(text[1:-1])
    parts.append("]")
    return replaced


def _nulled(value: Any) -> tuple[Any, int]:
    # Only reached when a value holds NaN/Infinity: rebuild it with None in their place.
    if isinstance(value, float) and not math.isfinite(value):
        return None, 1
    if isinstance(value, (list, tuple)):
        count = 0
        out = []
        for item in value:
            clean, n = _nulled(item)
            out.append(clean)
            count += n
        return out, count
    if isinstance(value, dict):
        count = 0
        cleaned = {}
        for key, item in value.items():
            cleaned[key], n = _nulled(item)
            count += n
        return cleaned, count
    if isinstance(value, np.ndarray):
        return _nulled(value.tolist())
    return value, 0
