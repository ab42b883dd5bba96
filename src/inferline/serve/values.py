"""Numbers from JSON bodies: every value a model gets is a finite number of the right kind.

`np.asarray` alone would turn `"5.1"` and `true` into numbers, `null` into NaN and `1e999` into
infinity, and truncate `2.7` declared INT64 to 2. Here one vectorised conversion covers the
common case (all numbers); only when it sees something else is the data walked in Python, to
name the first bad value and where it sits (instance and field, or tensor and position).

Example:
    >>> finite_numbers([[1, 2.5]], where=lambda index: f"row {index}").dtype
    dtype('float64')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from inferline.serve.http import ApiError, invalid_input

Where = Callable[[tuple[int, ...]], str]

INTEGER_TYPES: dict[str, type[np.integer[Any]]] = {
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}
FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
DATATYPES = ("BOOL", *INTEGER_TYPES, *FLOAT_TYPES)


def may_hold_booleans(body: bytes) -> bool:
    """Whether a JSON body can hold `true`/`false`, which numpy silently takes for 1 and 0."""
    return b"true" in body or b"false" in body


def describe(value: Any) -> str:
    """A JSON value as a client wrote it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return f"{'-' if value < 0 else ''}Infinity (or a number too large for a float)"
        return repr(value)
    if isinstance(value, int):
        return f"an integer of {len(str(abs(value)))} digits" if abs(value) > 10**20 else str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    return (
        "a list"
        if isinstance(value, list)
        else "an object"
        if isinstance(value, dict)
        else type(value).__name__
    )


def finite_numbers(data: Any, *, where: Where, allow_missing: bool = False) -> np.ndarray:
    """`data` (nested lists of JSON numbers) as float64, or a 422 naming the first bad value.

    Raises `ValueError` when the lists are ragged (the caller knows the expected shape).
    With `allow_missing`, `null` and NaN pass through as NaN (the model handles them).
    """
    raw = np.asarray(data)
    if raw.dtype.kind in "iuf":
        with np.errstate(over="ignore"):
            rows = raw.astype(np.float64, copy=False)
        bad = np.isinf(rows) if allow_missing else ~np.isfinite(rows)
        if not bad.any():
            return rows
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _not_a_number(where(index), _at(data, index))
    for index, value in _leaves(data):
        if not _is_number(value, allow_missing=allow_missing):
            raise _not_a_number(where(index), value)
    with np.errstate(over="ignore"):
        return np.asarray(data, dtype=np.float64)  # ragged data raises ValueError here


def check_no_booleans(data: Any, *, where: Where) -> None:
    """A 422 for the first boolean in `data` (call when `may_hold_booleans(body)`)."""
    for index, value in _leaves(data):
        if isinstance(value, bool):
            raise _not_a_number(where(index), value)


def typed_tensor(data: Any, datatype: str, *, where: Where, may_hold_bools: bool) -> np.ndarray:
    """v2 tensor `data` as `datatype`, or a 422 naming the first value that does not fit it."""
    raw = np.asarray(data)
    if datatype == "BOOL":
        if raw.dtype.kind != "b":
            for index, value in _leaves(data):
                if not isinstance(value, bool):
                    raise invalid_input(f"{where(index)} is {describe(value)}; expected true or false (BOOL)")
        return raw.astype(np.bool_)
    if may_hold_bools and raw.dtype.kind != "b":
        check_no_booleans(data, where=where)
    if datatype in FLOAT_TYPES:
        dtype = FLOAT_TYPES[datatype]
        rows = finite_numbers(data, where=where) if raw.dtype.kind not in "iuf" else raw
        with np.errstate(over="ignore", invalid="ignore"):
            out = rows.astype(dtype)
        bad = ~np.isfinite(out)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            value = _at(data, index)
            if _is_number(value, allow_missing=False):
                raise invalid_input(
                    f"{where(index)} is {describe(value)}, too large for {datatype} "
                    f"(at most {float(np.finfo(dtype).max):.4g})"
                )
            raise _not_a_number(where(index), value)
        return out
    dtype_int = INTEGER_TYPES[datatype]
    info = np.iinfo(dtype_int)
    if raw.dtype.kind in "iu":
        low, high = raw.min(initial=0), raw.max(initial=0)
        if low >= info.min and high <= info.max:
            return raw.astype(dtype_int)
    elif raw.dtype.kind == "f":
        whole = np.isfinite(raw) & (raw == np.floor(raw)) & (raw >= info.min) & (raw <= info.max)
        if whole.all():
            return raw.astype(dtype_int)
    for index, value in _leaves(data):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid_input(f"{where(index)} is {describe(value)}; expected a whole number ({datatype})")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise invalid_input(
                f"{where(index)} is {describe(value)}; expected a whole number ({datatype}), "
                "or declare the input FP32/FP64"
            )
        if not info.min <= value <= info.max:
            raise invalid_input(
                f"{where(index)} is {describe(value)}, outside {datatype}'s range {info.min}..{info.max}"
            )
    raise invalid_input(f"{where(())} does not fit {datatype}")  # not reached: a leaf failed above


def _is_number(value: Any, *, allow_missing: bool) -> bool:
    if value is None or isinstance(value, bool):
        return value is None and allow_missing
    if isinstance(value, float):
        return math.isfinite(value) or (allow_missing and math.isnan(value))
    if isinstance(value, int):
        return abs(value) < 2**1023  # larger integers have no float
    return False


def _not_a_number(where: str, value: Any) -> ApiError:
    return invalid_input(f"{where} is {describe(value)}; expected a finite number")


def _leaves(data: Any, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    # Iterative, so deeply nested bodies cannot exhaust the stack.
    stack: list[tuple[tuple[int, ...], Any]] = [(prefix, data)]
    while stack:
        index, value = stack.pop()
        if isinstance(value, (np.ndarray, np.generic)):
            value = value.tolist()  # parsed in a worker process (`serve/bodies.py`)
        if isinstance(value, list):
            stack.extend((index + (i,), v) for i, v in reversed(list(enumerate(value))))
        else:
            yield index, value


def _at(data: Any, index: tuple[int, ...]) -> Any:
    for i in index:
        data = data[i]
    return data.item() if isinstance(data, np.generic) else data
