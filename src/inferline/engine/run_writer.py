"""The local engine's writer side: one batch's results, dead letters and windows, committed in
that order, then the source acked.

`engine/local.py` runs the stages and their queues; this holds what the writer stage writes
to and the order that makes a restarted stream neither lose nor duplicate rows: the results
sink commits, then the dead letters, then the windows (`engine/window_stage.py`), and only then
is the batch acked (at once, or when its part file is committed: `engine/acks.py`).

Example:
    >>> writer = RunWriter(spec, source, stats, stream=True)  # doctest: +SKIP
    >>> writer.open()  # doctest: +SKIP
    >>> writer.write(work)  # doctest: +SKIP
    >>> writer.close(ok=True, interrupted=False)  # doctest: +SKIP
"""

from __future__ import annotations

from inferline.engine.acks import AckGate
from inferline.engine.keys import KeyTracker
from inferline.engine.run_outputs import (
    check_keys,
    close_sink,
    open_dead_sink,
    part_sinks,
    unique_keys,
    unwritable,
)
from inferline.engine.run_summary import RunStats
from inferline.engine.stage_queue import Work
from inferline.engine.window_stage import WindowStage
from inferline.errors import SinkSchemaError
from inferline.io.base import Sink, Source, dead_letter_batch
from inferline.io.factory import make_sink
from inferline.io.topic_source import TopicSource
from inferline.pipeline import FILE_SINK_KINDS, PipelineSpec


class RunWriter:
    """A run's sinks (results, dead letters, windows) and acks, written by the writer stage."""

    def __init__(self, spec: PipelineSpec, source: Source, stats: RunStats, *, stream: bool) -> None:
        self.spec = spec
        self.source = source
        self.stats = stats
        self.stream = stream
        self.sink: Sink = make_sink(spec.sink, origin=spec.origin, stream=stream)
        self.dead_spec = spec.dead_letter_spec()
        self.dead_sink: Sink | None = None
        # A stream's file dead-letter sink is a part directory, opened now: its parts commit
        # with the sink's (one journal), and a killed run's are recovered before reading.
        self.eager_dead = stream and self.dead_spec is not None and self.dead_spec.kind in FILE_SINK_KINDS
        # A key column the user named may repeat; generated keys (uri:row, message ids) do not.
        self.keys = KeyTracker() if spec.key and source.bounded else None
        self.windows = WindowStage(spec, stream=stream) if spec.window else None
        self._acks: AckGate | None = None

    def open(self) -> None:
        """Open the sinks and windows, recover a killed run's parts; close them all on failure."""
        self.sink.open()
        try:
            if self.eager_dead:
                self.dead_sink = open_dead_sink(self.spec, stream=self.stream)
            if self.windows is not None:
                self.windows.open()
            self._acks = AckGate(self.source, [p for s in (self.sink, self.dead_sink) for p in part_sinks(s)])
            self._acks.recover()
        except BaseException:
            close_sink(self.sink, False)
            if self.dead_sink is not None:
                close_sink(self.dead_sink, False)
            raise

    @property
    def acks(self) -> AckGate:
        if self._acks is None:
            raise RuntimeError("RunWriter used before open()")
        return self._acks

    def write(self, item: Work) -> None:
        """One batch: write and commit its results, dead letters and windows, then ack it."""
        if item.results is not None:
            try:
                self.sink.write(item.results)
            except SinkSchemaError as exc:
                # A column changed type (a new model): these rows are dead-lettered.
                item.dead.extend(unwritable(self.spec, item, str(exc), stream=self.stream))
                item.results = None
        if self.windows is not None:
            item.dead.extend(self.windows.add(item.results))
        if item.dead:
            if self.dead_sink is None and self.dead_spec is not None:
                self.dead_sink = open_dead_sink(self.spec, stream=self.stream, results=self.sink)
            if self.dead_sink is not None:
                self.dead_sink.write(dead_letter_batch(unique_keys(item.dead)))
        if item.results is not None and self.keys is not None:
            check_keys(self.spec, self.stats, self.keys, item.results)
        self.sink.commit()
        if self.dead_sink is not None:
            self.dead_sink.commit()
        if self.windows is not None:
            self.windows.commit()
        self.acks.committed(item.source.position, urgent=self.settling())

    def idle(self) -> None:
        """No batch came: part files due to roll roll (and their batches are acked)."""
        self.acks.idle(urgent=self.settling())

    def finish(self) -> None:
        """The stream's last parts, then their acks."""
        self.acks.roll()

    def settling(self) -> bool:
        """The source waits for every batch to be acked (a suspect message is read alone)."""
        return isinstance(self.source, TopicSource) and self.source.settling.is_set()

    def close(self, *, ok: bool, interrupted: bool) -> None:
        """Close every output: committed after a clean end, aborted after a failure, discarded
        (file outputs) when interrupted; a bounded input's windows all close first."""
        close_sink(self.sink, ok, discard=interrupted)
        if self.windows is not None:
            try:
                self.windows.finish(ok=ok, bounded=self.source.bounded)
            finally:
                if self.windows.sink is not None:
                    close_sink(self.windows.sink, ok, discard=interrupted)
        if self.dead_sink is not None:
            close_sink(self.dead_sink, ok, discard=interrupted)
        if self.keys is not None:
            self.keys.close()

    def dead_letter_output(self) -> str | None:
        """Where dead letters went, for the summary (a stream's eager sink only if it got any)."""
        if self.dead_sink is None or (self.eager_dead and not self.stats.rows_dead):
            return None
        return self.dead_sink.describe()
