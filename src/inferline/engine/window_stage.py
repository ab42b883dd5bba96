"""The writer's side of `window:`: feed result rows in, write closed windows to `window.sink`.

Order per batch (see DESIGN.md): the row sink commits, then closed windows are written and
the window sink commits, then the open windows are committed to the state file, then the
source is acked. A crash before the state commit replays the batch into the old state; a
crash after it replays rows the state already counts, which are skipped by key.

Example:
    >>> stage = WindowStage(spec, stream=True)  # doctest: +SKIP
    >>> stage.open()  # doctest: +SKIP
    >>> late = stage.add(results)  # doctest: +SKIP
    >>> stage.commit()  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from inferline.engine.windows import WindowOperator, default_state_path
from inferline.io.base import DeadLetter, Sink
from inferline.io.factory import make_sink
from inferline.pipeline import PipelineSpec, WindowSpec


class WindowStage:
    """A pipeline's windows and their sink, driven by the local engine's writer."""

    def __init__(
        self, spec: PipelineSpec, *, stream: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if spec.window is None:
            raise ValueError("WindowStage needs a spec with window:")
        self.window: WindowSpec = spec.window
        self.origin = spec.origin
        self.stream = stream
        self.clock = clock
        self.state_path = (self.window.state or default_state_path(spec.name)) if stream else None
        self.operator = WindowOperator(self.window, origin=spec.origin)
        self.sink: Sink | None = None
        self.rows_written = 0
        self._next_early: float | None = None

    def open(self) -> None:
        self.operator.open(self.state_path)
        try:
            self.sink = make_sink(self.window.sink, origin=self.origin, setting="--set window.sink.path={}")
            self.sink.open()
        except BaseException:
            self.operator.close_state()
            raise
        every = self.window.emit_every
        self._next_early = self.clock() + every if every is not None else None

    def add(self, results: pa.RecordBatch | None) -> list[DeadLetter]:
        """Rows of one batch into their windows; late rows come back as dead letters."""
        if results is None:
            return []
        return self.operator.add(results, ingest_time=time.time())

    def commit(self) -> None:
        """Write the windows the watermark closed (and early results when due), then save."""
        self._write(self.operator.close())
        every = self.window.emit_every
        if every is not None and self._next_early is not None and self.clock() >= self._next_early:
            self._write(self.operator.early())
            self._next_early = self.clock() + every
        self._commit_sink()
        self.operator.commit()

    def finish(self, *, ok: bool, bounded: bool) -> None:
        """A bounded input ends every window; a stream keeps them open for the next run."""
        try:
            if ok and bounded:
                self._write(self.operator.close(final=True))
                self._commit_sink()
                self.operator.commit()
        finally:
            self.operator.close_state()

    def _write(self, table: pa.Table | None) -> None:
        if table is None or self.sink is None:
            return
        for batch in table.to_batches():
            self.sink.write(batch)
        self.rows_written += table.num_rows

    def _commit_sink(self) -> None:
        if self.sink is not None:
            self.sink.commit()

    def describe(self) -> str:
        return self.sink.describe() if self.sink is not None else self.window.sink.describe()
