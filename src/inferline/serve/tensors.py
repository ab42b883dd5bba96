"""Open Inference Protocol v2 tensors: datatypes, and their JSON and raw (binary) encodings.

A tensor travels either as JSON (`"data": [...]`, row-major, flat or nested) or as raw
bytes: little-endian values without padding (the REST binary extension and gRPC's
`raw_input_contents`), BOOL as one byte each, BYTES as elements each prefixed by its length
as a 4-byte little-endian integer. Raw numeric data becomes a numpy view of the request's
own buffer (`np.frombuffer`), not a copy.

Example:
    >>> decode_raw(b"\\x01\\x00\\x00\\x00a", "BYTES", [1], name="t").tolist()
    [b'a']
    >>> encode_raw(np.array([1.5], dtype=np.float32))
    b'\\x00\\x00\\xc0?'
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferline.serve.http import bad_request, invalid_input
from inferline.serve.values import typed_tensor

NUMERIC: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMERIC, "BYTES")


@dataclass
class Tensor:
    """One named tensor of a request or an answer; `array` has `shape` already."""

    name: str
    datatype: str
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of a numpy array: FP32, INT64, BOOL, ... or BYTES for text/objects."""
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{array.dtype.itemsize * 8}"
    if kind == "f":
        return f"FP{array.dtype.itemsize * 8}"
    return "BYTES"


def check_header(name: str, datatype: Any, shape: Any, *, where: str) -> tuple[str, list[int]]:
    """The tensor's datatype and shape, or a 400 naming the tensor and what was expected."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_request(f"{where}: input {name!r} shape must be a list of sizes, got {shape!r}")
    if datatype not in DATATYPES:
        raise bad_request(
            f"{where}: input {name!r} has datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        )
    return str(datatype), shape


def decode_json(
    name: str, datatype: str, shape: list[int], data: Any, *, model: str, may_hold_bools: bool = True
) -> np.ndarray:
    """A tensor's JSON `data` (flat or nested, row-major) as an array of `shape`.

    Numbers must fit `datatype` (`serve/values.py`: ranges, whole numbers, finite, no
    strings, booleans or nulls); the 422 names the first value that does not.
    """
    prefix = f"model {model}: input {name!r}"
    if not isinstance(data, (list, np.ndarray)):  # an array when parsed in a worker process
        raise invalid_input(f"{prefix} data must be a list, got {type(data).__name__}")
    count = math.prod(shape)
    if datatype == "BYTES":
        values = list(_flatten(data))
        array = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise invalid_input(f"{prefix} is BYTES but element {i} is not a string")
            array[i] = value.encode()
    else:

        def where(index: tuple[int, ...]) -> str:
            return f"{prefix} value [{', '.join(map(str, index)) or '0'}]"

        try:
            array = typed_tensor(data, datatype, where=where, may_hold_bools=may_hold_bools).reshape(-1)
        except ValueError as exc:  # ragged nested lists
            raise invalid_input(f"{prefix} data is not a regular {datatype} array ({exc})") from exc
    if array.size != count:
        raise invalid_input(f"{prefix} has {array.size} values but shape {shape} needs {count}")
    return array.reshape(shape)


def decode_raw(buffer: bytes | memoryview, datatype: str, shape: list[int], *, name: str) -> np.ndarray:
    """Raw tensor bytes as an array of `shape`: a zero-copy view for numeric datatypes."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes(buffer, count, name=name).reshape(shape)
    dtype = NUMERIC[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise bad_request(
            f"input {name!r}: {len(buffer)} bytes of {datatype} data, but shape {shape} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def decode_bytes(buffer: bytes | memoryview, count: int, *, name: str) -> np.ndarray:
    """BYTES elements, each prefixed by its 4-byte little-endian length."""
    view = memoryview(buffer)
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise bad_request(f"input {name!r}: BYTES data ends before element {i} of {count}")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise bad_request(
                f"input {name!r}: BYTES element {i} claims {size} bytes past the end of the data"
            )
        out[i] = bytes(view[offset : offset + size])
        offset += size
    if offset != len(view):
        raise bad_request(f"input {name!r}: {len(view) - offset} bytes left after {count} BYTES elements")
    return out


def encode_raw(array: np.ndarray) -> bytes:
    """An answer's array as raw little-endian bytes (BYTES elements length-prefixed)."""
    if datatype_of(array) == "BYTES":
        parts = []
        for value in array.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def json_data(array: np.ndarray) -> list[Any]:
    """An answer's array as a flat JSON list (BYTES as text)."""
    if datatype_of(array) == "BYTES":
        values = array.reshape(-1).tolist()
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values]
    return list(array.reshape(-1).tolist())


def _flatten(data: Any) -> Any:
    # Iterative, so deeply nested bodies cannot exhaust the stack.
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        else:
            yield value
