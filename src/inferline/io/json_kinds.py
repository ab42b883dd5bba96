"""How the fields of JSON messages are judged: kinds of values, numbers, widening.

Shared by `JsonMessages` (io/json_messages.py) for Arrow columns and Python values alike.

Example:
    >>> kind_of(pa.list_(pa.int64())), common_type(pa.int64(), pa.float64())
    ('list of numbers', DataType(double))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def top_field(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    """The column `name` names (`a.b`: field `b` of struct column `a`), or None."""
    head, _, rest = name.partition(".")
    if name in table.column_names:
        return table.column(name)
    if not rest or head not in table.column_names:
        return None
    column: Any = table.column(head)
    for part in rest.split("."):
        if not pa.types.is_struct(column.type) or column.type.get_field_index(part) < 0:
            return None
        column = pc.struct_field(column, part)
    return column


def null_mask(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean per row: is it null."""
    return np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def is_nested(t: pa.DataType) -> bool:
    """Whether `t` is a struct or a list."""
    return bool(pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t))


def is_numbers(t: pa.DataType) -> bool:
    """Whether `t` holds numbers (or only nulls), maybe in lists."""
    if pa.types.is_null(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return is_numbers(t.value_type)
    return False


def as_floats(column: pa.ChunkedArray | pa.Array) -> Any:
    """`column` as float64 (lists of float64 for lists)."""
    # Model inputs are float64 however they were written: 5 and 5.0 are the same feature.
    return column.cast(_float_type(column.type))


def _float_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_float_type(t.value_type))
    return pa.float64()


def common_type(known: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The type both fit in (int -> float, null -> anything), or None if they conflict."""
    if pa.types.is_null(new):
        return known
    if pa.types.is_null(known):
        return new
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(known) for f in numeric) and any(f(new) for f in numeric):
        return pa.float64() if pa.types.is_floating(known) or pa.types.is_floating(new) else pa.int64()
    if pa.types.is_list(known) and pa.types.is_list(new):
        inner = common_type(known.value_type, new.value_type)
        return pa.list_(inner) if inner is not None else None
    return None


def kind_of(t: pa.DataType) -> str:
    """What a user calls values of type `t` in an error: number, text, list of numbers, ..."""
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "true/false"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list of numbers" if is_numbers(t) else "list"
    if pa.types.is_struct(t):
        return "an object"
    return str(t)


PY_KINDS: dict[type, str] = {
    bool: "true/false",
    int: "number",
    float: "number",
    str: "text",
    list: "list",
    dict: "an object",
}


def all_numbers(value: list[Any]) -> bool:
    """Whether a parsed JSON list holds only numbers (or lists of them)."""
    for v in value:
        kind = type(v)
        if kind is not float and kind is not int and not (kind is list and all_numbers(v)):
            return False
    return True
