"""Inputs in the framework's default memory layout: C-contiguous with standard strides.

`np.ascontiguousarray` is not enough. A transposed batch with a size-1 axis (28x28x1 images
moved to NCHW) is "C-contiguous" for numpy, which ignores the strides of size-1 axes, so no
copy is made and the odd strides reach the framework: torch reads `(784, 1, 28, 1)` as
channels-last, its convolutions then answer channels-last tensors, and a model that flattens
with `x.view(x.size(0), -1)` fails with "view size is not compatible with input tensor's size
and stride". Every handler passes its inputs through `standard_layout` first.

Example:
    >>> import numpy as np
    >>> nhwc = np.zeros((2, 28, 28, 1), dtype=np.float32)
    >>> np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)).strides
    (3136, 4, 112, 4)
    >>> standard_layout(nhwc.transpose(0, 3, 1, 2)).strides
    (3136, 3136, 112, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def standard_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The strides a freshly allocated C-order array of `shape` has."""
    strides = []
    step = itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def standard_layout(array: Any, dtype: Any = None, *, writable: bool = False) -> np.ndarray:
    """`array` as a C-contiguous array with standard strides (a view when it already is one).

    `writable=True` copies read-only memory (Arrow-backed arrays), which torch wants to own.
    """
    out = np.ascontiguousarray(array, dtype=dtype)
    if out.strides != standard_strides(out.shape, out.itemsize):
        # Contiguous data with odd strides on size-1 axes: the same memory, re-strided.
        out = out.reshape(-1).reshape(out.shape)
    if writable and not out.flags.writeable:
        out = out.copy()
    return out
