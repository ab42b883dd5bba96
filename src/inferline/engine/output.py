"""The `output:` mapping: shape result rows the way the destination table expects.

Each entry names an output column and says where its values come from: a result column
(`prediction`, `scores`, `model_id`, `key`, or any source column passed through), a
field of a struct (`message.user.id`), an element of a list (`feature[0]`, `scores[1]`),
or a nested mapping, which becomes a struct column. Evaluated over whole Arrow columns.

Example:
    >>> mapping = OutputMapping({"input": {"sepal_length": "feature[0]"}, "predict": "prediction"})
    >>> batch = pa.RecordBatch.from_pydict({"key": ["a"], "feature": [[5.1, 3.5]], "prediction": [0]})
    >>> mapping.apply(batch).to_pylist()
    [{'key': 'a', 'input': {'sepal_length': 5.1}, 'predict': 0}]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SpecError

_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w-]*)((?:\s*(?:\.[A-Za-z_][\w-]*|\[\d+\]))*)\s*$")
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")


@dataclass(frozen=True)
class _Path:
    text: str
    column: str
    steps: tuple[str | int, ...]  # field names and list indices, in order


class OutputMapping:
    """A compiled `output:` mapping; `apply(batch)` returns `key` plus the mapped columns."""

    def __init__(self, mapping: dict[str, Any], *, origin: str = "<spec>") -> None:
        self.origin = origin
        self.tree = self._compile(mapping, "output")

    def _compile(self, node: Any, where: str) -> dict[str, Any]:
        if not isinstance(node, dict) or not node:
            raise SpecError(
                f"{self.origin}: {where}: expected a mapping of column names to expressions "
                'such as {predict: prediction, sepal_length: "feature[0]"}'
            )
        tree: dict[str, Any] = {}
        for name, value in node.items():
            place = f"{where}.{name}"
            if isinstance(value, dict):
                tree[str(name)] = self._compile(value, place)
            elif isinstance(value, str) and (match := _EXPRESSION.match(value)):
                steps: list[str | int] = []
                for field, index in _STEP.findall(match.group(2)):
                    steps.append(int(index) if index else field)
                tree[str(name)] = _Path(value.strip(), match.group(1), tuple(steps))
            else:
                raise SpecError(
                    f"{self.origin}: {place}: {value!r} is not a column expression; expected a column, "
                    'a struct field or a list element such as prediction, "user.id" or "feature[0]"'
                )
        return tree

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names: list[str] = []
        arrays: list[pa.Array] = []
        if "key" not in self.tree and "key" in batch.schema.names:
            names.append("key")
            arrays.append(batch.column("key"))
        for name, node in self.tree.items():
            names.append(name)
            arrays.append(self._evaluate(batch, node, f"output.{name}"))
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def _evaluate(self, batch: pa.RecordBatch, node: _Path | dict[str, Any], where: str) -> pa.Array:
        if isinstance(node, dict):
            children = [self._evaluate(batch, child, f"{where}.{n}") for n, child in node.items()]
            return pa.StructArray.from_arrays(children, names=list(node))
        if node.text in batch.schema.names:
            return batch.column(node.text)
        if node.column not in batch.schema.names:
            raise SpecError(
                f"{self.origin}: {where}: column {node.column!r} not found "
                f"(columns: {', '.join(batch.schema.names)})"
            )
        column: pa.Array = batch.column(node.column)
        for step in node.steps:
            column = self._step(column, step, node, where)
        return column

    def _step(self, column: pa.Array, step: str | int, node: _Path, where: str) -> pa.Array:
        if isinstance(step, int):
            if not (
                pa.types.is_list(column.type)
                or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)
            ):
                raise SpecError(
                    f"{self.origin}: {where}: {node.text!r}: [{step}] needs a list, got {column.type}"
                )
            try:
                return pc.list_element(column, step)
            except pa.ArrowInvalid:
                raise SpecError(
                    f"{self.origin}: {where}: {node.text!r}: index {step} is out of range for some row"
                ) from None
        if not pa.types.is_struct(column.type) or column.type.get_field_index(step) < 0:
            raise SpecError(f"{self.origin}: {where}: {node.text!r}: no field {step!r} in {column.type}")
        return pc.struct_field(column, step)
