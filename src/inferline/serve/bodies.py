"""JSON instances -> the model's rows, with every value checked; runs in-process or in a worker.

`RowSpec` is what a model expects of a row (its id, input names, row shape, whether it takes
missing values) in a picklable form, so `parse_instances` can run in a worker process: a large
body is parsed there and only the finished float64 array comes back, because `json.loads` and
`np.asarray` hold the GIL for their whole run (a second per 10 MB on a busy machine) and a thread
would freeze the event loop just the same.

Example:
    >>> spec = RowSpec("iris/1", ("a", "b"), (2,))
    >>> parse_instances(b'[[1, 2], {"a": 3, "b": 4}]', "POST /predictions/iris", spec)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.serve.http import bad_request, invalid_input, parse_json
from inferline.serve.values import check_no_booleans, describe, finite_numbers, may_hold_booleans


@dataclass(frozen=True)
class RowSpec:
    """What one model version expects of a request's rows."""

    model_id: str
    inputs: tuple[str, ...] = ()
    row_shape: tuple[int, ...] | None = None
    allow_missing: bool = False
    text: tuple[str, ...] = ()  # inputs that take strings (a Hugging Face text model's `text`)

    @property
    def text_only(self) -> bool:
        """One input, and it takes text: a JSON string is one instance, a list of them many."""
        return len(self.inputs) == 1 and self.inputs[0] in self.text

    def expected_shape(self) -> list[int]:
        """The batch shape a request must have, -1 for the number of rows."""
        return [-1, *(self.row_shape or ())] if self.row_shape is not None else [-1]

    def check_rows(self, rows: np.ndarray, *, input_name: str = "input") -> np.ndarray:
        """`rows` if its shape fits, else a 422 naming the input and the expected shape."""
        if rows.ndim == 0 or len(rows) == 0:
            raise invalid_input(
                f"model {self.model_id}: input {input_name!r} has no rows (shape {list(rows.shape)}); "
                f"expected {self.expected_shape()}"
            )
        if self.row_shape is not None and tuple(rows.shape[1:]) != self.row_shape:
            raise invalid_input(
                f"model {self.model_id}: input {input_name!r} has shape {list(rows.shape)}; "
                f"expected {self.expected_shape()}"
                + (f" (features {', '.join(self.inputs)})" if self.inputs else "")
            )
        return rows


def parse_instances(body: bytes, route: str, spec: RowSpec) -> np.ndarray:
    """A TorchServe JSON body straight to checked rows (what a worker process runs)."""
    instances = instances_of(parse_json(body, route=route), route, text_only=spec.text_only)
    return rows_of(instances, spec, input_name="instances", may_hold_bools=may_hold_booleans(body))


MIN_ARRAY = 1024  # shorter lists are not worth an array


def parse_json_arrays(body: bytes, route: str) -> Any:
    """`parse_json`, with long lists of numbers as numpy arrays (what a worker process sends back).

    An array pickles as one block of memory; a list of a million floats would be rebuilt object
    by object in the server, holding the GIL as long as parsing did. Bodies that may hold
    booleans stay as parsed, so numpy never takes `true` for 1.
    """
    payload = parse_json(body, route=route)
    return payload if may_hold_booleans(body) else _with_arrays(payload)


def _with_arrays(value: Any) -> Any:
    # Recursion is bounded: parse_json refuses bodies nested deeper than MAX_JSON_DEPTH.
    if isinstance(value, dict):
        return {key: _with_arrays(item) for key, item in value.items()}
    if isinstance(value, list):
        if len(value) >= MIN_ARRAY and not isinstance(value[0], (dict, str)):
            try:
                array = np.asarray(value)
            except ValueError:  # ragged
                array = None
            if array is not None and array.dtype.kind in "iuf":
                return array
        return [_with_arrays(item) for item in value]
    return value


def instances_of(payload: Any, route: str, *, text_only: bool = False) -> list[Any]:
    """The list of instances in any of TorchServe/KServe-v1's body shapes.

    For a model whose one input is text (`text_only`), a JSON string is one instance and a
    list of strings is a list of instances (for others a flat list is one row of numbers).
    """
    if isinstance(payload, dict):
        if "instances" in payload:
            instances = payload["instances"]
            if not isinstance(instances, list):
                raise bad_request(f"{route}: 'instances' must be a list, got {type(instances).__name__}")
            return instances
        return [payload]
    if isinstance(payload, list):
        if payload and not isinstance(payload[0], (list, dict)) and not text_only:
            return [payload]
        return payload
    if isinstance(payload, str) and text_only:
        return [payload]
    raise bad_request(
        f'{route}: expected a JSON list, an object or {{"instances": [...]}}, got {type(payload).__name__}'
    )


def rows_of(
    instances: list[Any], spec: RowSpec, *, input_name: str, may_hold_bools: bool = True
) -> np.ndarray:
    """Instances (lists of numbers, or objects keyed by input name) as float64 rows."""
    if not instances:
        raise invalid_input(f"model {spec.model_id}: input {input_name!r} is empty; send at least one row")
    if spec.text:
        return text_rows(instances, spec)
    named = isinstance(instances[0], dict)
    if named:
        instances = [_named_row(row, spec, i) for i, row in enumerate(instances)]
    single = not isinstance(instances[0], list)  # one instance given as a flat list

    def where(index: tuple[int, ...]) -> str:
        if single:
            index = (0, *index)
        if not index:
            return f"model {spec.model_id}: input {input_name!r}"
        field = ""
        if len(index) > 1:
            name = spec.inputs[index[1]] if spec.inputs and index[1] < len(spec.inputs) else None
            field = f", field {name}" if name else f", value {list(index[1:])}"
        return f"model {spec.model_id}: instance {index[0]}{field}"

    try:
        if may_hold_bools:
            check_no_booleans(instances, where=where)
        rows = finite_numbers(instances, where=where, allow_missing=spec.allow_missing)
    except ValueError as exc:  # ragged lists, or deeper than numpy's 32 dimensions
        raise invalid_input(
            f"model {spec.model_id}: input {input_name!r} must be numbers of shape "
            f"{spec.expected_shape()} ({exc})"
        ) from exc
    if rows.ndim == 1:
        rows = rows.reshape(len(rows), 1) if spec.row_shape == (1,) else rows.reshape(1, -1)
    return spec.check_rows(rows, input_name=input_name)


def _named_row(row: Any, spec: RowSpec, index: int) -> list[Any]:
    if not isinstance(row, dict):
        raise bad_request(f"model {spec.model_id}: instance {index} is not an object like the others")
    if not spec.inputs:
        raise invalid_input(
            f"model {spec.model_id}: instance {index} has named fields but the model has no input "
            f"names; send lists of shape {spec.expected_shape()}"
        )
    missing = [name for name in spec.inputs if name not in row]
    if missing:
        raise invalid_input(
            f"model {spec.model_id}: instance {index} lacks {', '.join(missing)}; "
            f"expected fields {', '.join(spec.inputs)}"
        )
    return [row[name] for name in spec.inputs]


def text_rows(instances: list[Any], spec: RowSpec) -> np.ndarray:
    """Instances of a model with text inputs as an object matrix: text fields as `str`, the
    others as float. An instance is an object keyed by input name, a list in input order, or
    (one text input) the string itself."""
    rows = np.empty((len(instances), len(spec.inputs)), dtype=object)
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            values = _named_row(instance, spec, i)
        elif isinstance(instance, list):
            values = instance
        else:
            values = [instance]
        if len(values) != len(spec.inputs):
            raise invalid_input(
                f"model {spec.model_id}: instance {i} has {len(values)} values; expected "
                f"{len(spec.inputs)} ({', '.join(spec.inputs)})"
            )
        for j, (name, value) in enumerate(zip(spec.inputs, values, strict=True)):
            where = f"model {spec.model_id}: instance {i}, field {name}"
            if name in spec.text:
                # null reaches a model that imputes it (a trained model's NULL category)
                if not isinstance(value, str) and not (value is None and spec.allow_missing):
                    raise invalid_input(f"{where} is {describe(value)}; expected a string")
                rows[i, j] = value
            else:
                number = finite_numbers(value, where=_fixed(where), allow_missing=spec.allow_missing)
                rows[i, j] = float(number)
    return spec.check_rows(rows, input_name="instances")


def _fixed(where: str) -> Callable[[tuple[int, ...]], str]:
    return lambda _: where
