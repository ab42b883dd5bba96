"""Tensors in Arrow: a `FixedSizeList<float32>[C*H*W]` column whose field metadata holds the shape.

Images (and any fixed-shape tensor) travel between stages as one flat fixed-size list per
row; the field's `inferline.shape` metadata (JSON, e.g. `[1, 28, 28]`) lets the model
stage turn the column back into an (n, *shape) array without copying or upcasting.

Example:
    >>> import numpy as np
    >>> field, column = tensor_column("image", np.zeros((2, 1, 4, 4), dtype=np.float32))
    >>> tensor_shape(field)
    (1, 4, 4)
    >>> tensor_matrix(column, (1, 4, 4)).shape
    (2, 1, 4, 4)
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

SHAPE_KEY = b"inferline.shape"


def tensor_field(name: str, shape: tuple[int, ...], dtype: pa.DataType | None = None) -> pa.Field:
    """The Arrow field for a column of tensors of `shape` (one tensor per row)."""
    size = int(np.prod(shape)) if shape else 1
    return pa.field(
        name,
        pa.list_(dtype or pa.float32(), size),
        metadata={SHAPE_KEY: json.dumps([int(d) for d in shape]).encode()},
    )


def tensor_column(name: str, stacked: np.ndarray) -> tuple[pa.Field, pa.FixedSizeListArray]:
    """An (n, *shape) array as (field, column); float32 stays float32, no copy if contiguous."""
    stacked = np.ascontiguousarray(stacked)
    shape = tuple(int(d) for d in stacked.shape[1:])
    field = tensor_field(name, shape, pa.from_numpy_dtype(stacked.dtype))
    size = field.type.list_size
    values = pa.array(stacked.reshape(-1)) if stacked.size else pa.array([], field.type.value_type)
    column = pa.FixedSizeListArray.from_arrays(values, size)
    return field, column


def tensor_shape(field: pa.Field) -> tuple[int, ...] | None:
    """The per-row shape recorded on `field`, or None if it is not a tensor column."""
    if not pa.types.is_fixed_size_list(field.type) or not field.metadata:
        return None
    raw = field.metadata.get(SHAPE_KEY)
    if raw is None:
        return None
    try:
        shape = tuple(int(d) for d in json.loads(raw))
    except (ValueError, TypeError):
        return None
    if int(np.prod(shape)) != field.type.list_size:
        return None
    return shape


def tensor_matrix(column: pa.Array | pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor column as an (n, *shape) numpy array in its own dtype (zero-copy when possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    size = column.type.list_size
    # `.values` ignores both the slice offset and null rows, so index it directly:
    # null rows keep their slots and the caller masks them out.
    flat = column.values.slice(column.offset * size, n * size)
    if flat.null_count:
        flat = flat.fill_null(0)
    return np.asarray(flat.to_numpy(zero_copy_only=True)).reshape((n, *shape))
