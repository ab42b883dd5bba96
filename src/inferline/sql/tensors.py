"""Arrow columns <-> model tensors, on whole chunks.

SQL hands a UDF Arrow arrays: numeric columns, a `DOUBLE[]` of features, or nested lists
holding images (`[height][width][channels]`). They become one numpy array per chunk, laid
out as the model's framework expects (NCHW for PyTorch, NHWC for Keras); outputs go back
to Arrow with NULL for rows that had no usable input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.models.base import LoadedModel


def combine(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def is_list_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def valid_rows(columns: list[pa.Array]) -> np.ndarray:
    """Rows where every input is present."""
    n = len(columns[0]) if columns else 0
    valid = np.ones(n, dtype=bool)
    for column in columns:
        if column.null_count:
            valid &= np.asarray(column.is_valid().to_numpy(zero_copy_only=False))
    return valid


def complete_rows(column: pa.Array) -> np.ndarray:
    """Rows that are present and, for a list of numbers, hold no NULL number."""
    valid = valid_rows([column])
    if is_list_type(column.type) and not is_list_type(column.type.value_type):
        values = column.flatten()
        if values.null_count:
            parents = pc.list_parent_indices(column)
            holes = np.asarray(parents.filter(values.is_null()).to_numpy(zero_copy_only=False))
            valid[holes] = False
    return valid


def list_tensor(column: pa.Array, *, where: str) -> np.ndarray:
    """A list (of lists...) column with no NULL rows as an (n, d1, d2, ...) float array.

    FLOAT values stay float32 (images); anything else becomes float64, so features
    reach the model exactly as they are stored.
    """
    shape = [len(column)]
    values: pa.Array = column
    while is_list_type(values.type):
        lengths = np.asarray(pc.fill_null(pc.list_value_length(values), -1).to_numpy(zero_copy_only=False))
        if len(lengths) == 0:
            shape.append(0)
            values = values.flatten()
            continue
        if (lengths < 0).any():
            raise SqlError(f"{where}: an input array holds NULL elements; filter them out first")
        if (lengths != lengths[0]).any():
            sizes = ", ".join(str(v) for v in sorted(set(lengths.tolist()))[:5])
            raise SqlError(
                f"{where}: input arrays differ in size ({sizes}); a model needs one shape per batch "
                "(for images: decode_image(data, height, width) resizes)"
            )
        shape.append(int(lengths[0]))
        values = values.flatten()
    if values.null_count:
        raise SqlError(f"{where}: an input array holds NULL values; filter them out first")
    dtype = np.float32 if pa.types.is_float32(values.type) else np.float64
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)
    return flat.reshape(shape)


def scalar_matrix(
    columns: list[pa.Array], names: list[str], *, where: str, text: list[str] | None = None
) -> np.ndarray:
    """Numeric columns stacked into an (n, k) float64 matrix, NULL as NaN; with `text` (a model's
    string inputs) those columns stay strings (NULL as None) and the matrix is an object array."""
    as_text = set(text or ())
    parts = []
    for name, column in zip(names, columns, strict=True):
        t = column.type
        if name in as_text:
            strings = (
                column
                if pa.types.is_string(t) or pa.types.is_large_string(t)
                else pc.cast(column, pa.string())
            )
            parts.append(np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object))
            continue
        if pa.types.is_decimal(t):
            column = pc.cast(column, pa.float64())
        elif not (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)
        ):
            raise SqlError(f"{where}: input column {name!r} is {t}, expected numbers")
        if column.null_count:  # only reached for a model that imputes NULL (NaN) features
            column = pc.cast(column, pa.float64()).fill_null(np.nan)
        parts.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
    if not as_text:
        return np.column_stack(parts)
    matrix = np.empty((len(parts[0]) if parts else 0, len(parts)), dtype=object)
    for j, part in enumerate(parts):
        matrix[:, j] = part
    return matrix


def model_layout(tensor: np.ndarray, loaded: LoadedModel) -> np.ndarray:
    """Images as `[n, h, w, c]` -> the layout the model's framework takes."""
    framework = loaded.handler.framework
    if tensor.ndim == 4:
        if framework == "torch" or (framework == "onnx" and _onnx_wants_nchw(loaded.model, tensor)):
            return np.ascontiguousarray(tensor.transpose(0, 3, 1, 2))
        if framework in ("sklearn", "onnx") and _wants_flat(loaded):
            return tensor.reshape(len(tensor), -1)
        return tensor
    if tensor.ndim > 2 and framework == "sklearn":
        return tensor.reshape(len(tensor), -1)
    return tensor


def _onnx_wants_nchw(session: Any, tensor: np.ndarray) -> bool:
    try:
        shape = session.get_inputs()[0].shape
    except (AttributeError, IndexError):
        return False
    channels = tensor.shape[3]
    return len(shape) == 4 and shape[1] == channels and shape[3] != channels


def _wants_flat(loaded: LoadedModel) -> bool:
    if loaded.handler.framework == "sklearn":
        return True
    try:
        return len(loaded.model.get_inputs()[0].shape) == 2
    except (AttributeError, IndexError):
        return False


def scatter(values: pa.Array, valid: np.ndarray) -> pa.Array:
    """Values computed for the valid rows, spread back over all rows with NULL elsewhere."""
    if valid.all():
        return values
    index = np.full(len(valid), -1, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))
    indices = pa.array(index, mask=~valid)
    return values.take(indices)


def to_arrow(values: np.ndarray) -> pa.Array:
    """A model output as an Arrow column: 1-D as scalars, (n, k) as lists of floats."""
    if values.ndim == 1:
        if values.dtype == object:
            return pa.array(values.tolist())
        return pa.array(values)
    if values.ndim == 2 and values.shape[1] == 1:
        return to_arrow(values[:, 0])
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(len(values), -1)
    width = flat.shape[1]
    offsets = pa.array(np.arange(0, (len(flat) + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)))


def empty_prediction(n: int, t: pa.DataType) -> pa.Array:
    return pa.nulls(n, type=t)
