"""The queues between the local engine's stages: reader -> predict workers -> writer.

Items are numbered by the reader; the writer takes them back in that order (`in_order`),
however many predict workers there are. `DONE` ends a stage, `TICK` tells the writer that
nothing came in time (it looks at the clock for stream stats).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from inferline.io.base import DeadLetter, SourceBatch
from inferline.models.registry import ModelRef

DONE = object()
TICK = object()  # no batch came in time: look at the clock (stream stats)


@dataclass
class Work:
    """One batch on its way from the predict workers to the writer."""

    source: SourceBatch
    results: pa.RecordBatch | None
    dead: list[DeadLetter]


def default_workers(refs: list[ModelRef]) -> int:
    # Models that run single-threaded but release the GIL (scikit-learn) get one predict
    # worker per core; frameworks with their own thread pools (onnxruntime, torch) get one.
    hints = [getattr(ref.current().handler, "parallel_batches", 1) or 1 for ref in refs]
    return max(1, min(hints)) if hints else 1


def in_order(
    q: queue.Queue[Any], producers: int, *, wait: Callable[[], float | None] = lambda: None
) -> Iterator[Any]:
    """Items from `producers` workers, back in the order the reader numbered them.

    Yields `TICK` when nothing came within `wait()` seconds (None: wait as long as it takes).
    """
    pending: dict[int, Work] = {}
    expected = 0
    done = 0
    while done < producers:
        try:
            item = q.get(timeout=wait())
        except queue.Empty:
            yield TICK
            continue
        if item is DONE:
            done += 1
            continue
        seq, work = item
        pending[seq] = work
        while expected in pending:
            yield pending.pop(expected)
            expected += 1
    # After a failure some numbers never arrive; what did arrive is still written in order.
    for seq in sorted(pending):
        yield pending[seq]


def drain(q: queue.Queue[Any]) -> None:
    """Empty `q` without blocking."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
