"""Model calls inside DuckDB UDF calls: how many torch threads and how many rows per call.

DuckDB hands a UDF whole chunks (2,048 rows) and runs UDF calls on several of its threads at
once when a scan is large enough to split (~100,000 rows or more); a small query (a folder of
5,000 images, say) runs every call on one thread, one after another.

- Torch threads: a torch model call runs on all of torch's intra-op threads when no other
  inferline UDF call (decode_image, predict..., ML.PREDICT) is running at that moment, and
  on one thread when one is (DuckDB is then busy on the other cores: torch's threads on top
  of its own oversubscribe the CPU, measured 10x slower on small batches on a busy machine).
  Serial calls on one thread were 1.7x slower on one torch thread than on two (2 cores).
- Rows per call: image tensors (3 dimensions or more, for torch, Keras or ONNX) are passed
  to the model in slices of about `SLICE_BYTES` of input: a CNN's activations for 2,048
  images do not fit in the CPU caches (digits CNN on 2,048 28x28 images: 149 ms in one
  call, 73-89 ms in slices of 128-256 rows). Feature rows, and models served elsewhere
  (remote) or by scikit-learn, get the whole chunk in one call.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from inferline.models.base import LoadedModel, Prediction

# Input bytes per model call for image tensors (28x28x1 float32: 167 rows), but never fewer rows than
# MIN_SLICE_ROWS (a 224x224x3 image is 602 KB).
SLICE_BYTES = 512 * 1024
MIN_SLICE_ROWS = 16
SLICED_FRAMEWORKS = ("torch", "keras", "onnx")

_lock = threading.Lock()
_in_flight = 0  # inferline UDF calls running now, on any thread
_torch_default = 0  # torch's intra-op threads as the user left them (0: not read yet)


@contextmanager
def udf_call() -> Iterator[None]:
    """Count one inferline UDF call as running while the block runs."""
    global _in_flight
    with _lock:
        _in_flight += 1
    try:
        yield
    finally:
        with _lock:
            _in_flight -= 1


def running_calls() -> int:
    """How many inferline UDF calls are running now (this one included, when inside one)."""
    with _lock:
        return _in_flight


@contextmanager
def torch_threads() -> Iterator[int]:
    """Torch's intra-op threads for one model call on this thread: all, or one when other UDF
    calls run; yields the number used. The thread's own setting is restored afterwards."""
    global _torch_default
    torch = sys.modules["torch"]
    current = int(torch.get_num_threads())
    with _lock:
        # Read the user's setting from the main thread, or from the first call (before any
        # change): a DuckDB thread that first ran torch while another call had set one thread
        # starts with one.
        if not _torch_default or threading.current_thread() is threading.main_thread():
            _torch_default = current
        wanted = 1 if _in_flight > 1 else _torch_default
    if wanted != current:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != current:
            torch.set_num_threads(current)


def slice_rows(tensor: np.ndarray, framework: str) -> int:
    """Rows per model call for this chunk's input tensor (the whole chunk unless it is images)."""
    rows = len(tensor)
    if framework not in SLICED_FRAMEWORKS or tensor.ndim < 3 or rows == 0:
        return max(rows, 1)
    per_row = max(int(tensor[0].nbytes), 1)
    return min(rows, max(MIN_SLICE_ROWS, SLICE_BYTES // per_row))


def predict_sliced(loaded: LoadedModel, tensor: np.ndarray) -> Prediction:
    """`loaded.predict(tensor)`, in slices of `slice_rows` rows; the outputs concatenated."""
    step = slice_rows(tensor, loaded.handler.framework)
    if step >= len(tensor):
        return loaded.predict(tensor)
    parts = [loaded.predict(tensor[start : start + step]) for start in range(0, len(tensor), step)]
    return Prediction.concat(parts)
