"""Arrow batch -> feature matrix, and model outputs -> Arrow result columns.

Both directions are vectorised; per-row Python runs only for rows that are bad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.engine.tensors import tensor_matrix, tensor_shape
from inferline.errors import InputError
from inferline.models.base import Prediction

RESULT_COLUMNS = ("key", "prediction", "scores", "model_id")


@dataclass
class Features:
    """A feature matrix for the good rows of a batch, and why the others are bad."""

    matrix: np.ndarray
    good: np.ndarray  # bool mask over the batch's rows
    errors: dict[int, str] = field(default_factory=dict)


def resolve_column(data: pa.RecordBatch, name: str) -> pa.Array:
    """A column by name; `a.b` reaches into struct columns (as JSON messages nest)."""
    if name in data.schema.names:
        return data.column(name)
    head, _, rest = name.partition(".")
    if rest and head in data.schema.names:
        column: pa.Array = data.column(head)
        for part in rest.split("."):
            if not pa.types.is_struct(column.type) or column.type.get_field_index(part) < 0:
                break
            column = pc.struct_field(column, part)
        else:
            return column
    raise KeyError(name)


def extract_features(
    data: pa.RecordBatch,
    inputs: list[str],
    *,
    where: str = "input",
    text: list[str] | None = None,
    missing: bool = False,
) -> Features:
    """Stack `inputs` into an (n, k) float64 matrix; rows with unusable values are marked bad.

    `inputs` names scalar columns, or one list-valued column. With no inputs, every
    numeric column is used. Columns named in `text` (a model's string inputs) are kept as
    strings, and the matrix is then an object array. With `missing` (a model that imputes),
    an empty scalar field is NaN (numbers) or None (text) instead of a bad row.
    """
    n = data.num_rows
    good = np.ones(n, dtype=bool)
    errors: dict[int, str] = {}
    tensors = _tensor_inputs(data, inputs)
    if tensors is not None:
        return _tensor_features(data, *tensors, good, errors)
    names = inputs or [f.name for f in data.schema if _is_numeric(f.type)]
    if not names:
        raise InputError(f"{where}: no numeric columns to use as model inputs; set inputs:")
    columns = []
    for name in names:
        try:
            columns.append((name, resolve_column(data, name)))
        except KeyError:
            have = ", ".join(data.schema.names)
            raise InputError(f"{where}: input column {name!r} not found (columns: {have})") from None
    if len(columns) == 1 and _is_list(columns[0][1].type):
        matrix = _stack_list(columns[0][0], columns[0][1], good, errors)
    else:
        as_text = set(text or ())
        parts = [
            _as_text(name, col, good, errors, missing)
            if name in as_text
            else _as_float(name, col, good, errors, missing)
            for name, col in columns
        ]
        if as_text and parts:
            matrix = np.empty((n, len(parts)), dtype=object)
            for j, part in enumerate(parts):
                matrix[:, j] = part
        else:
            matrix = np.column_stack(parts) if parts else np.empty((n, 0))
    return Features(matrix=matrix[good] if not good.all() else matrix, good=good, errors=errors)


def _tensor_inputs(data: pa.RecordBatch, inputs: list[str]) -> tuple[str, tuple[int, ...]] | None:
    # One tensor column (e.g. decoded images) is fed as (n, *shape) in its own dtype;
    # with no inputs: given, a batch's single tensor column is the input.
    candidates = inputs if len(inputs) == 1 else [] if inputs else list(data.schema.names)
    found = [
        (name, shape)
        for name in candidates
        if name in data.schema.names and (shape := tensor_shape(data.schema.field(name))) is not None
    ]
    return found[0] if len(found) == 1 else None


def _tensor_features(
    data: pa.RecordBatch, name: str, shape: tuple[int, ...], good: np.ndarray, errors: dict[int, str]
) -> Features:
    column = data.column(name)
    matrix = tensor_matrix(column, shape)
    if column.null_count:
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        _mark(good, errors, np.flatnonzero(nulls), f"field {name!r} is empty, expected a tensor")
        matrix = matrix[good]
    return Features(matrix=matrix, good=good, errors=errors)


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _mark(good: np.ndarray, errors: dict[int, str], rows: np.ndarray, message: str) -> None:
    for row in rows.tolist():
        if good[row]:
            good[row] = False
            errors[row] = message


def _as_float(
    name: str, column: pa.Array, good: np.ndarray, errors: dict[int, str], missing: bool = False
) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if missing and column.null_count and (_is_numeric(column.type) or pa.types.is_null(column.type)):
        return np.asarray(pc.cast(column, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))
    if column.null_count:
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        _mark(good, errors, np.flatnonzero(nulls), f"field {name!r} is empty, expected a number")
        column = column.fill_null(0) if _is_numeric(column.type) else column.fill_null("0")
    if _is_numeric(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _parse_slowly(name, column, good, errors)
    raise InputError(f"input column {name!r} has type {column.type}, expected numbers")


def _as_text(
    name: str, column: pa.Array, good: np.ndarray, errors: dict[int, str], missing: bool = False
) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count and not missing:
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        _mark(good, errors, np.flatnonzero(nulls), f"field {name!r} is empty, expected text")
        column = column.fill_null("") if pa.types.is_string(column.type) else column
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)


def _parse_slowly(name: str, column: pa.Array, good: np.ndarray, errors: dict[int, str]) -> np.ndarray:
    # Only reached when some value is not a number: find which, keep the rest.
    values = column.to_pylist()
    out = np.zeros(len(values), dtype=np.float64)
    for row, text in enumerate(values):
        try:
            out[row] = float(text)
        except (TypeError, ValueError):
            _mark(good, errors, np.array([row]), f"field {name!r}: {text!r} is not a number")
    return out


def _stack_list(name: str, column: pa.Array, good: np.ndarray, errors: dict[int, str]) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if column.null_count:
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        _mark(good, errors, np.flatnonzero(nulls), f"field {name!r} is empty, expected a list of numbers")
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False))
    valid = lengths[good]
    width = int(np.bincount(valid).argmax()) if len(valid) else 0
    wrong = np.flatnonzero((lengths != width) & good)
    _mark(good, errors, wrong, f"field {name!r} has the wrong length, expected {width} numbers")
    out = np.zeros((n, width), dtype=np.float64)
    rows = np.flatnonzero(good)
    if rows.size == 0 or width == 0:
        return out
    flat = pc.list_flatten(column.take(pa.array(rows)))
    item_good = np.ones(len(flat), dtype=bool)
    values = _as_float(name, flat, item_good, {})
    out[rows] = values.reshape(-1, width)
    if not item_good.all():
        bad_rows = rows[np.unique(np.flatnonzero(~item_good) // width)]
        _mark(good, errors, bad_rows, f"field {name!r} holds a value that is not a number")
    return out


def list_column(matrix: np.ndarray) -> pa.Array:
    """An (n, k) array as an Arrow list<double> column, without a Python loop."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    width = int(np.prod(matrix.shape[1:])) if matrix.ndim > 1 else 1
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def prediction_column(values: np.ndarray) -> pa.Array:
    if values.ndim > 1:
        if values.shape[1] == 1 and values.ndim == 2:
            return pa.array(values[:, 0])
        return list_column(values)
    if values.dtype == object:
        return pa.array(values.tolist())
    return pa.array(values)


def passthrough_columns(
    data: pa.RecordBatch, keys: pa.Array, *, keep: list[str] | None = None
) -> tuple[list[str], list[pa.Array]]:
    """The leading result columns: `key`, then the source columns passed through."""
    names: list[str] = ["key"]
    arrays: list[pa.Array] = [keys]
    # Tensor columns (decoded pixels) are model inputs, not results: kept only on request.
    passthrough = [f.name for f in data.schema if tensor_shape(f) is None] if keep is None else keep
    for name in passthrough:
        if name not in data.schema.names:
            raise InputError(f"keep: column {name!r} not found (columns: {', '.join(data.schema.names)})")
        names.append(f"{name}_input" if name in RESULT_COLUMNS else name)
        arrays.append(data.column(name))
    return names, arrays


def result_columns(prediction: Prediction) -> dict[str, pa.Array]:
    """A prediction's result columns: `prediction` (+ `scores`), or one column per named output
    of a multi-output model (values as scalars, vectors as lists; `key`/`model_id` clashes get
    an `output_` prefix)."""
    if prediction.outputs is not None:
        return {
            f"output_{name}" if name in ("key", "model_id") else name: prediction_column(np.asarray(values))
            for name, values in prediction.outputs.items()
        }
    columns = {"prediction": prediction_column(prediction.prediction)}
    if prediction.scores is not None:
        columns["scores"] = list_column(prediction.scores)
    return columns


def assemble(
    data: pa.RecordBatch,
    keys: pa.Array,
    prediction: Prediction,
    model_id: str,
    *,
    keep: list[str] | None = None,
) -> pa.RecordBatch:
    """Result rows: key, passed-through source columns, prediction, scores (or the named
    outputs), model_id. A source column named like a result column is kept as `<name>_input`."""
    n = data.num_rows
    results = result_columns(prediction)
    names, arrays = passthrough_columns(data, keys, keep=keep)
    names = [f"{name}_input" if i and name in results else name for i, name in enumerate(names)]
    names.extend(results)
    arrays.extend(results.values())
    names.append("model_id")
    arrays.append(pa.repeat(pa.scalar(model_id), n) if n else pa.array([], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=names)
