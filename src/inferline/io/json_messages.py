"""`JsonMessages`: JSON message bodies -> one Arrow table, a poison message costing only itself.

A stream's columns come from what the pipeline needs, not from whichever message came
first: model inputs must be numbers or lists of numbers (integers are widened to float64),
the `key:` field must be there and not null; other fields keep the type they first had
with a value (numbers widen, int -> float). A message that does not fit is reported alone.

The usual batch is parsed in one vectorised `pyarrow.json` call and checked column by
column. When pyarrow cannot parse a batch as a whole, the poison is found without leaving the
vectorised path (`_parse_around_poison`): only the poison messages are looked at with
`json.loads`, and the good ones are parsed together in one call again.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from inferline.io.json_batch import JoinedMessages, misfit_pattern, read, suspects
from inferline.io.json_kinds import (
    PY_KINDS,
    all_numbers,
    as_floats,
    common_type,
    is_nested,
    is_numbers,
    kind_of,
    null_mask,
    top_field,
)

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024


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
            elif body == b"null":  # pyarrow would read it as a row of nulls
                errors[i] = "not a usable JSON message: expected a JSON object, got null"
        rows = [i for i in range(len(bodies)) if i not in errors]
        parts = self._parse_around_poison(bodies, rows, errors)
        fitted = [self._fit(table, part_rows, errors) for table, part_rows in parts]
        if len(fitted) == 1:
            return fitted[0]
        try:
            table = pa.concat_tables([f.table for f in fitted if f.good], promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # parts with a new field of two types
            table = None
        if table is None or not any(f.good for f in fitted):
            kept = [r for f in fitted for r in f.good]
            if not kept:
                return Decoded(_empty(), [], errors)
            return self._screened(bodies, kept, errors)
        return Decoded(table, [r for f in fitted for r in f.good], errors)

    def _parse_around_poison(
        self, bodies: list[bytes], rows: list[int], errors: dict[int, str]
    ) -> list[tuple[pa.Table, list[int]]]:
        """Finds the poison, then parses every good message in one call.

        First one vectorised look (`json_batch.suspects`: not an object, or a typed field or
        model input whose value starts as the wrong kind) sets aside the obvious poison, each
        suspect screened alone. What it misses, pyarrow finds:
        once the stream's schema is known it is explicit, so pyarrow names the exact row that
        does not fit ("... changed from array to string in row 7", "Invalid value. in row
        3") and stops there: that message is poison, and the search goes on from the row
        after it in the same joined buffer (no copy, no re-parse of the rows before). A
        parse costs ~50 us however short, so the good rows are parsed once, together, at
        the end: poison costs one short parse each, not two parses of the rest. Only an
        error that names no row, a message that fits only with a wider schema, or dense
        poison sends what is left to the per-message screen. In a field the stream has not
        typed yet (its first batches) the named row is poison only if it is bad on its own
        (text in a model input); otherwise the other messages may be the odd ones.
        """
        joined = JoinedMessages([bodies[i] for i in rows])
        schema = self._explicit()
        poison: set[int] = set()
        at = 0
        looked = False
        while at < len(rows):
            table, culprit, sure = self._try(joined, at, schema)
            if table is not None:
                if not poison:
                    return [(table, rows)]  # the usual batch: one parse
                at = len(rows)
                break
            if not looked:  # the batch has poison: set aside the obvious ones in one pass
                looked = True
                kept = self._without_suspects(bodies, rows, joined, errors)
                if len(kept) < len(rows):
                    rows, joined = kept, JoinedMessages([bodies[i] for i in kept])
                    continue
            if culprit is None:
                break
            if self._screen(bodies, [rows[culprit]], errors):
                if sure:
                    at = culprit  # it fits, only not as the schema stands (1.5 in an int field)
                break  # widen below, or (not sure) let the screen judge the rest by majority
            poison.add(culprit)
            at = culprit + 1
            if len(poison) >= _DENSE and len(poison) * _DENSE > at:
                break  # one poison in fewer than _DENSE messages: the screen is cheaper
        parts: list[tuple[pa.Table, list[int]]] = []
        good = [rows[i] for i in range(at) if i not in poison]
        rest = rows[at:]
        if good:
            table, _ = _parse([bodies[i] for i in good], schema)
            if table is None:  # runs that parse alone but not together: a new field of two types
                rest = good + rest
            else:
                parts.append((table, good))
        if rest:
            # Parsed with types inferred again, so `_fit` can widen the stream's (int -> float).
            rest = self._screen(bodies, rest, errors)
            table = _parse([bodies[i] for i in rest])[0] if rest else None
            if table is not None:
                parts.append((table, rest))
            elif rest:
                parts.extend(self._one_by_one(bodies, rest, errors))
        return parts

    def _without_suspects(
        self, bodies: list[bytes], rows: list[int], joined: JoinedMessages, errors: dict[int, str]
    ) -> list[int]:
        """`rows` less the messages that a vectorised look finds suspect and the screen refuses.

        Each suspect is screened alone, as a row pyarrow names would be: same verdict, same
        reason, without a parse up to it.
        """
        pattern = misfit_pattern(self.schema, self.inputs)
        refused = {p for p in suspects(joined, pattern) if not self._screen(bodies, [rows[p]], errors)}
        return [r for p, r in enumerate(rows) if p not in refused] if refused else rows

    def _try(
        self, joined: JoinedMessages, at: int, schema: pa.Schema | None
    ) -> tuple[pa.Table | None, int | None, bool]:
        """Parses the messages from `at` on: the table, or the row pyarrow names (None: no row).

        The flag says whether that row is surely at fault: a type change in a field the stream
        has not typed yet could be either message's fault.
        """
        table, error = joined.parse(at, schema)
        if table is not None or error is None:
            return table, None, True
        found = _ROW.search(error)
        if found is None:
            return None, None, True
        column = _COLUMN.search(error)
        sure = column is None or not column.group(1) or column.group(1) in self.schema
        return None, at + int(found.group(1)), sure

    def _explicit(self) -> pa.Schema | None:
        return pa.schema(list(self.schema.items())) if self.schema else None

    def _screened(self, bodies: list[bytes], rows: list[int], errors: dict[int, str]) -> Decoded:
        rest = self._screen(bodies, rows, errors)
        table = _parse([bodies[i] for i in rest])[0] if rest else _empty()
        if table is None:
            parts = self._one_by_one(bodies, rest, errors)
            if not parts:
                return Decoded(_empty(), [], errors)
            table, rest = parts[0]
        return self._fit(table, rest, errors)

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
            column = top_field(table, self.key)
            if column is None:
                mark(np.ones(n, dtype=bool), f"no {self.key!r} (the pipeline's key:), or it is null")
            elif is_nested(column.type):
                mark(np.ones(n, dtype=bool), f"{self.key!r} (the key) is {column.type}, expected a value")
            else:
                mark(null_mask(column), f"no {self.key!r} (the pipeline's key:), or it is null")
        columns: dict[str, pa.ChunkedArray] = {}
        for name in table.column_names:
            column = table.column(name)
            if name in self.inputs:
                if not is_numbers(column.type):
                    mark(
                        ~null_mask(column),
                        f"field {name!r} is {kind_of(column.type)}, expected numbers (a model input)",
                    )
                    column = pa.nulls(n, pa.float64())
                mark(null_mask(column), f"field {name!r} is empty, expected numbers (a model input)")
                column = as_floats(column)
            known = self.schema.get(name)
            if known is not None and column.type != known:
                wider = common_type(known, column.type)
                if wider is None:
                    mark(
                        ~null_mask(column),
                        f"field {name!r} is {kind_of(column.type)}, where the stream has {kind_of(known)}",
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
        """Per message: is it a JSON object whose fields fit? Returns the rows that do.

        Messages are judged by their fields' Python types, once per distinct set of them (a
        batch has few), plus the model inputs' values; this is the rare path, but at 1%
        poison most batches take it, so it must stay cheap.
        """
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
        expected = {name: kind_of(t) for name, t in self.schema.items()}
        new = set().union(*(v.keys() for v in values.values())) - set(expected)
        if new:  # fields the stream has not seen yet take the kind most messages give them
            counts: dict[str, Counter[str]] = {name: Counter() for name in new}
            for value in values.values():
                for name in new.intersection(value):
                    item = value[name]
                    if item is not None:
                        kind = PY_KINDS.get(type(item), "other")
                        counts[name]["list of numbers" if kind == "list" and all_numbers(item) else kind] += 1
            expected.update({n: c.most_common(1)[0][0] for n, c in counts.items() if c})
        verdicts: dict[tuple[tuple[str, type], ...], str | None] = {}
        for i, value in values.items():
            types = tuple((name, type(item)) for name, item in value.items())
            if types not in verdicts:
                verdicts[types] = self._misfit(types, expected)
            problem = verdicts[types]
            if problem is None:
                for name in self.inputs:
                    item = value.get(name)
                    if type(item) is list and not all_numbers(item):
                        problem = (
                            f"field {name!r} is a list but not of numbers, expected numbers (a model input)"
                        )
                        break
            if problem is not None:
                errors[i] = problem
        return [i for i in rows if i not in errors]

    def _misfit(self, types: tuple[tuple[str, type], ...], expected: dict[str, str]) -> str | None:
        present = dict(types)
        if self.key is not None and "." not in self.key and present.get(self.key, type(None)) is type(None):
            return f"no {self.key!r} (the pipeline's key:), or it is null"
        for name, python_type in types:
            if python_type is type(None):
                continue
            kind = PY_KINDS.get(python_type, python_type.__name__)
            if name in self.inputs and kind not in ("number", "list"):
                return f"field {name!r} is {kind}, expected numbers (a model input)"
            want = expected.get(name, kind)
            if kind != want and not (kind == "list" and want == "list of numbers"):
                return f"field {name!r} is {kind}, where the stream has {want}"
        return None

    def _one_by_one(
        self, bodies: list[bytes], rows: list[int], errors: dict[int, str]
    ) -> list[tuple[pa.Table, list[int]]]:
        # Nested fields that differ in depth: parse each alone, keep the most common shape.
        parsed: list[tuple[int, pa.Table]] = []
        for i in rows:
            one = _parse([bodies[i]])[0]
            if one is None:
                errors[i] = f"fields do not match the stream's schema ({self.describe()})"
            else:
                parsed.append((i, one))
        if not parsed:
            return []
        usual = Counter(str(t.schema) for _, t in parsed).most_common(1)[0][0]
        keep = [(i, t) for i, t in parsed if str(t.schema) == usual]
        for i, t in parsed:
            if str(t.schema) != usual:
                fields = ", ".join(f"{f.name}: {f.type}" for f in t.schema)
                errors[i] = f"fields differ from the other messages ({fields})"
        return [(pa.concat_tables([t for _, t in keep]), [i for i, _ in keep])]


_ROW = re.compile(r" in row (\d+)$")
_DENSE = 16  # past this many poison messages, and one in fewer than this many: screen the rest
_COLUMN = re.compile(r"Column\(/?([^/)]*)")


def _parse(bodies: list[bytes], schema: pa.Schema | None = None) -> tuple[pa.Table | None, str | None]:
    """One vectorised parse (one block, so an error's row counts from the first body)."""
    if not bodies:
        return _empty(), None
    return read(pa.py_buffer(b"\n".join(bodies)), schema)


def _empty() -> pa.Table:
    return pa.table({})
