"""`JsonMessages`: JSON message bodies -> one Arrow table, a poison message costing only itself.

A stream's columns come from what the pipeline needs, not from whichever message came
first: model inputs must be numbers or lists of numbers (integers are widened to float64),
the `key:` field must be there and not null; other fields keep the type they first had
with a value (numbers widen, int -> float). A message that does not fit is reported alone.

The usual batch is parsed in one vectorised `pyarrow.json` call and checked column by
column. Only a batch that pyarrow cannot parse as a whole (invalid JSON, one field with two
types) is screened message by message with `json.loads`; the good ones are then parsed
together again, so they stay on the vectorised path.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_BLOCK = 1 << 20  # pyarrow's default block; a block must hold the longest message


@dataclass
class Decoded:
    """The rows of the messages that fit (`good`: their indices) and why the others did not."""

    table: pa.Table
    good: list[int]
    errors: dict[int, str] = field(default_factory=dict)


class JsonMessages:
    """Decodes message bodies for a pipeline with `key` and model `inputs` (top-level names).

    Example:
        >>> decoded = JsonMessages(key="id", inputs=["feature"]).decode([b'{"id": 1, "feature": [1, 2]}'])
        >>> decoded.table.column("feature").type
        ListType(list<item: double>)
    """

    def __init__(
        self,
        *,
        key: str | None = None,
        inputs: list[str] | None = None,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.key = key
        self.inputs = list(inputs or [])
        self.max_bytes = max_bytes
        self.schema: dict[str, pa.DataType] = {}  # the stream's columns so far

    def describe(self) -> str:
        return ", ".join(f"{n}: {t}" for n, t in self.schema.items()) or "unknown"

    def decode(self, bodies: list[bytes]) -> Decoded:
        errors: dict[int, str] = {}
        for i, body in enumerate(bodies):
            if len(body) > self.max_bytes:
                errors[i] = (
                    f"message is {len(body):,} bytes, over the limit of {self.max_bytes:,} "
                    "(source.options.max_message_bytes)"
                )
        rows = [i for i in range(len(bodies)) if i not in errors]
        table = _parse([bodies[i] for i in rows])
        if table is None:  # the rare path: find the poison, parse the rest together again
            rows = self._screen(bodies, rows, errors)
            table = _parse([bodies[i] for i in rows]) if rows else _empty()
            if table is None:
                return self._one_by_one(bodies, rows, errors)
        return self._fit(table, rows, errors)

    # --- the vectorised check ---------------------------------------------------------
    def _fit(self, table: pa.Table, rows: list[int], errors: dict[int, str]) -> Decoded:
        """Checks the needed fields, widens numbers, conforms to the stream's schema."""
        n = table.num_rows
        bad = np.zeros(n, dtype=bool)
        why: dict[int, str] = {}

        def mark(mask: np.ndarray, message: str) -> None:
            for row in np.flatnonzero(mask & ~bad).tolist():
                why[row] = message
            bad[:] |= mask

        if self.key is not None:
            column = _top(table, self.key)
            if column is None:
                mark(np.ones(n, dtype=bool), f"no {self.key!r} field (the pipeline's key:)")
            elif _nested(column.type):
                mark(np.ones(n, dtype=bool), f"{self.key!r} (the key) is {column.type}, expected a value")
            else:
                mark(_nulls(column), f"{self.key!r} (the pipeline's key:) is null")
        columns: dict[str, pa.ChunkedArray] = {}
        for name in table.column_names:
            column = table.column(name)
            if name in self.inputs:
                if not _numbers(column.type):
                    mark(
                        ~_nulls(column),
                        f"field {name!r} is {_kind(column.type)}, expected numbers (a model input)",
                    )
                    column = pa.nulls(n, pa.float64())
                mark(_nulls(column), f"field {name!r} is empty, expected numbers (a model input)")
                column = _widen(column)
            known = self.schema.get(name)
            if known is not None and column.type != known:
                wider = _wider(known, column.type)
                if wider is None:
                    mark(
                        ~_nulls(column),
                        f"field {name!r} is {_kind(column.type)}, where the stream has {_kind(known)}",
                    )
                    column = pa.nulls(n, known)
                else:
                    self.schema[name] = known = wider
                    column = column.cast(wider)
            elif known is None and not pa.types.is_null(column.type) and not bad.all():
                self.schema[name] = column.type
            columns[name] = column
        for name, known in self.schema.items():
            if name not in columns:
                columns[name] = pa.nulls(n, known)
        order = [n_ for n_ in self.schema if n_ in columns] + [c for c in columns if c not in self.schema]
        out = pa.table({name: columns[name] for name in order})
        if bad.any():
            for row, message in why.items():
                errors[rows[row]] = message
            out = out.filter(pa.array(~bad))
            rows = [r for r, b in zip(rows, bad.tolist(), strict=True) if not b]
        return Decoded(out, rows, errors)

    # --- the rare path ----------------------------------------------------------------
    def _screen(self, bodies: list[bytes], rows: list[int], errors: dict[int, str]) -> list[int]:
        """Per message: is it a JSON object whose fields fit? Returns the rows that do."""
        values: dict[int, dict[str, Any]] = {}
        for i in rows:
            try:
                value = json.loads(bodies[i])
            except ValueError as exc:
                errors[i] = f"not a usable JSON message: {exc}"
                continue
            if not isinstance(value, dict):
                errors[i] = f"not a usable JSON message: expected a JSON object, got {type(value).__name__}"
                continue
            values[i] = value
        # Fields the stream has not seen yet take the kind most messages give them.
        usual: dict[str, str] = {}
        counts: dict[str, Counter[str]] = {}
        for value in values.values():
            for name, item in value.items():
                if name not in self.schema and item is not None:
                    counts.setdefault(name, Counter())[_py_kind(item)] += 1
        for name, counter in counts.items():
            usual[name] = counter.most_common(1)[0][0]
        for i, value in values.items():
            problem = self._misfit(value, usual)
            if problem is not None:
                errors[i] = problem
        return [i for i in rows if i not in errors]

    def _misfit(self, value: dict[str, Any], usual: dict[str, str]) -> str | None:
        if self.key is not None and "." not in self.key and value.get(self.key) is None:
            return (
                f"no {self.key!r} field (the pipeline's key:)"
                if self.key not in value
                else (f"{self.key!r} (the pipeline's key:) is null")
            )
        for name, item in value.items():
            if item is None:
                continue
            kind = _py_kind(item)
            if name in self.inputs and kind not in ("number", "list of numbers"):
                return f"field {name!r} is {kind}, expected numbers (a model input)"
            known = self.schema.get(name)
            expected = _kind(known) if known is not None else usual.get(name, kind)
            if (
                kind != expected
                and not (kind == "list" and expected.startswith("list"))
                and not (kind == "list of numbers" and expected == "list")
            ):
                return f"field {name!r} is {kind}, where the stream has {expected}"
        return None

    def _one_by_one(self, bodies: list[bytes], rows: list[int], errors: dict[int, str]) -> Decoded:
        # Nested fields that differ in depth: parse each alone, keep the most common shape.
        parsed: list[tuple[int, pa.Table]] = []
        for i in rows:
            one = _parse([bodies[i]])
            if one is None:
                errors[i] = f"fields do not match the stream's schema ({self.describe()})"
            else:
                parsed.append((i, one))
        if not parsed:
            return Decoded(_empty(), [], errors)
        usual = Counter(str(t.schema) for _, t in parsed).most_common(1)[0][0]
        keep = [(i, t) for i, t in parsed if str(t.schema) == usual]
        for i, t in parsed:
            if str(t.schema) != usual:
                fields = ", ".join(f"{f.name}: {f.type}" for f in t.schema)
                errors[i] = f"fields differ from the other messages ({fields})"
        table = pa.concat_tables([t for _, t in keep])
        return self._fit(table, [i for i, _ in keep], errors)


def _parse(bodies: list[bytes]) -> pa.Table | None:
    if not bodies:
        return _empty()
    block = max(_BLOCK, max(len(b) for b in bodies) + 2)
    try:
        return pa_json.read_json(
            io.BytesIO(b"\n".join(bodies)),
            read_options=pa_json.ReadOptions(block_size=block),
            parse_options=pa_json.ParseOptions(newlines_in_values=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _empty() -> pa.Table:
    return pa.table({})


def _top(table: pa.Table, name: str) -> pa.ChunkedArray | None:
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


def _nulls(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _nested(t: pa.DataType) -> bool:
    return bool(pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t))


def _numbers(t: pa.DataType) -> bool:
    if pa.types.is_null(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _numbers(t.value_type)
    return False


def _widen(column: pa.ChunkedArray | pa.Array) -> Any:
    # Model inputs are float64 however they were written: 5 and 5.0 are the same feature.
    return column.cast(_float_type(column.type))


def _float_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_float_type(t.value_type))
    return pa.float64()


def _wider(known: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The type both fit in (int -> float, null -> anything), or None if they conflict."""
    if pa.types.is_null(new):
        return known
    if pa.types.is_null(known):
        return new
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(known) for f in numeric) and any(f(new) for f in numeric):
        return pa.float64() if pa.types.is_floating(known) or pa.types.is_floating(new) else pa.int64()
    if pa.types.is_list(known) and pa.types.is_list(new):
        inner = _wider(known.value_type, new.value_type)
        return pa.list_(inner) if inner is not None else None
    return None


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "true/false"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list of numbers" if _numbers(t) else "list"
    if pa.types.is_struct(t):
        return "an object"
    return str(t)


def _py_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list of numbers" if _py_numbers(value) else "list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _py_numbers(value: list[Any]) -> bool:
    return all(
        (isinstance(v, int | float) and not isinstance(v, bool)) or (isinstance(v, list) and _py_numbers(v))
        for v in value
    )
