"""The local engine: read -> predict -> write, each stage on its own thread.

Stages are joined by bounded queues, so reading the next batch, predicting this one and
writing the last overlap (pyarrow, numpy and onnxruntime release the GIL) and memory
stays flat. The writer stage (`engine/run_writer.py`) commits the sinks and only then acks
the source, so a restarted stream neither loses nor duplicates rows (at-least-once delivery +
upsert on key); a stream's file sinks write part files, acked once their part is committed
(`engine/acks.py`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from inferline.engine.process import BatchProcessor
from inferline.engine.run_outputs import batch_keys, is_table_sink
from inferline.engine.run_summary import RunStats, RunSummary
from inferline.engine.run_writer import RunWriter
from inferline.engine.stage_queue import DONE, TICK, Work, default_workers, drain, in_order
from inferline.engine.streamstats import LatencyTracker, StreamStats
from inferline.io.base import Source, SourceBatch
from inferline.io.factory import make_source
from inferline.io.loaders import ImageLoader, make_loader
from inferline.io.targets import check_run_outputs
from inferline.io.topic_source import TopicSource
from inferline.models.base import LoadedModel
from inferline.models.registry import ModelRef
from inferline.models.watch import open_model_ref
from inferline.pipeline import FILE_SINK_KINDS, PipelineSpec

__all__ = ["LocalEngine", "RunStats", "RunSummary", "run_pipeline"]


class LocalEngine:
    """Runs one pipeline spec on this machine.

    Example:
        >>> engine = LocalEngine(load_spec("examples/iris/pipeline.yaml"))  # doctest: +SKIP
        >>> summary = engine.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        limit: int | None = None,
        stop: threading.Event | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        models: list[ModelRef] | None = None,
        clock: Callable[[], float] = time.monotonic,
        queue_depth: int = 4,
        workers: int | None = None,
        until_idle: float | None = None,
        stats_every: float | None = None,
        on_stats: Callable[[StreamStats], None] | None = None,
        broker_timeout: float | None = None,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.spec = spec
        self.limit = limit
        # `stop` ends reading. A stream finishes, commits and acks what it read (its normal
        # end); a bounded run is interrupted: work in flight is dropped, what was committed
        # stays, file outputs are not written, and the summary's status is `interrupted`.
        self.stop = stop or threading.Event()
        # `interrupt` (a second Ctrl-C): end now, streams too, without waiting for workers.
        self.interrupt = interrupt or threading.Event()
        self._interrupted = False
        self.on_progress = on_progress
        self.clock = clock
        self.queue_depth = queue_depth
        self.workers = workers
        self.stats = RunStats()
        self._models = models
        self._failure: BaseException | None = None
        self.until_idle = until_idle
        self.stats_every = stats_every
        self.on_stats = on_stats
        self.broker_timeout = broker_timeout
        self.latency = LatencyTracker()
        # Set on failure: stages drop what they hold instead of finishing it.
        self._abort = threading.Event()
        self._next_stats: float | None = None
        self._last_stats = 0.0
        self._processor = BatchProcessor()
        self._loader: ImageLoader | None = None
        self._stream = False

    # --- building -------------------------------------------------------------------
    def _open_models(self) -> list[ModelRef]:
        if self._models is not None:
            return self._models
        refs: list[ModelRef] = []
        try:
            for spec in self.spec.all_models:
                refs.append(open_model_ref(spec, on_error=self._model_error))
        except BaseException:
            for ref in refs:
                ref.close()
            raise
        return refs

    def _model_error(self, model: str, message: str) -> None:
        # Called from a watcher thread; list.append is atomic.
        self.stats.model_errors.append(message)

    def _string_columns(self) -> list[str]:
        names: list[str] = []
        for model in self.spec.all_models:
            names.extend(model.input_columns)
        return names

    # --- stages ---------------------------------------------------------------------
    def _read(self, source: Source, out: queue.Queue[Any]) -> None:
        try:
            remaining = self.limit
            seq = 0
            for batch in source.batches():
                if remaining is not None:
                    if remaining <= 0:
                        break
                    if batch.data.num_rows > remaining:
                        batch.data = batch.data.slice(0, remaining)
                        batch.keys = batch.keys.slice(0, remaining)
                    remaining -= batch.data.num_rows
                if self._loader is not None:
                    batch = self._loader(batch)
                self._put(out, (seq, batch))
                seq += 1
                # Checked after handing the batch on: a stream's messages, once read, are
                # finished and acked rather than left pending.
                if self.stop.is_set() or self._abort.is_set():
                    break
        except BaseException as exc:  # handed to the writer, which re-raises it
            self._fail(exc)
        finally:
            self._put(out, DONE, force=True)

    def _predict_stage(self, refs: list[ModelRef], inbox: queue.Queue[Any], out: queue.Queue[Any]) -> None:
        try:
            while True:
                item = inbox.get()
                if item is DONE:
                    # Let the other predict workers see the end too.
                    self._put(inbox, DONE, force=True)
                    break
                seq, batch = item
                self._put(out, (seq, self.process(batch, [r.current() for r in refs])))
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._put(out, DONE, force=True)

    def process(self, batch: SourceBatch, models: list[LoadedModel]) -> Work:
        """Steps -> model(s) -> steps for one batch; bad rows become dead letters."""
        dead = list(batch.dead)
        if batch.data.num_rows == 0:
            return Work(batch, None, dead)
        keys = batch_keys(self.spec, batch)
        results, more = self._processor(batch.data, keys, models)
        if more and self._stream and keys is not batch.keys:
            # A stream's dead letters are keyed by message id whatever failed, so a message that
            # failed to parse and another's payload id never share (and overwrite) one key.
            by_key = dict(zip(keys.to_pylist(), batch.keys.to_pylist(), strict=True))
            for letter in more:
                letter.key = by_key.get(letter.key, letter.key)
        dead.extend(more)
        if models:
            self.stats.model_ids.update(m.model_id for m in models)
        return Work(batch, results, dead)

    # --- run ------------------------------------------------------------------------
    def run(self) -> RunSummary:
        started = self.clock()
        source = make_source(self.spec, string_columns=self._string_columns())
        self._stream = not source.bounded
        check_run_outputs(self.spec, stream=self._stream)
        self._loader = make_loader(self.spec.source, origin=self.spec.origin)
        read_q: queue.Queue[Any] = queue.Queue(self.queue_depth)
        # A bounded source is read while the models load (a SavedModel takes ~0.1 s, a torch
        # file more): the first batches are waiting when the model is ready. A stream starts
        # reading only once its sinks have recovered their parts (below).
        reader = self._start_reader(source, read_q) if source.bounded else None
        try:
            refs = self._open_models()
            self._processor = BatchProcessor.from_spec(self.spec)
        except BaseException:
            if reader is not None:
                self._stop_reader(reader, read_q, source, [])
            raise
        if len(refs) > 1:
            self._processor.pool = ThreadPoolExecutor(len(refs), thread_name_prefix="inferline-model")
        if isinstance(source, TopicSource):
            source.bind(
                stop=self.stop,
                limit=self.limit,
                until_idle=self.until_idle,
                clock=self.clock,
                broker_timeout=self.broker_timeout,
            )
        writer = RunWriter(self.spec, source, self.stats, stream=self._stream)
        if reader is None:
            source.open()
            self.stats.progress_total = source.progress_total()
        try:
            writer.open()
        except BaseException:
            self._stop_reader(reader, read_q, source, refs)
            raise
        write_q: queue.Queue[Any] = queue.Queue(self.queue_depth)
        workers = self.workers if self.workers is not None else default_workers(refs)
        threads = [
            reader
            or threading.Thread(target=self._read, args=(source, read_q), name="inferline-read", daemon=True)
        ]
        threads += [
            threading.Thread(
                target=self._predict_stage,
                args=(refs, read_q, write_q),
                name=f"inferline-predict-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]
        for thread in threads:
            if thread is not reader:  # already reading
                thread.start()
        ok = False
        self._last_stats = started
        self._next_stats = started + self.stats_every if self.stats_every else None
        try:
            for item in in_order(write_q, workers, wait=self._writer_wait):
                if self._interrupting(source):
                    break
                self._maybe_report(source)
                if item is TICK:
                    writer.idle()
                    continue
                writer.write(item)
                self._count(item)
            if self._failure is not None:
                raise self._failure
            if not self._interrupted:
                writer.finish()
                self._maybe_report(source, final=True)  # the stream's state as it ends
            ok = not self._interrupted
        finally:
            if not ok:
                self._abort.set()
            self.stop.set()
            drain(read_q)
            drain(write_q)
            for thread in threads:
                # A second Ctrl-C does not wait for a model call in flight (daemon threads).
                thread.join(timeout=0.2 if self.interrupt.is_set() else 10)
            writer.close(ok=ok, interrupted=self._interrupted)
            source.close()
            for ref in refs:
                ref.close()
            if self._processor.pool is not None:
                self._processor.pool.shutdown(wait=False)
            if self._loader is not None:
                self._loader.close()
        seconds = max(self.clock() - started, 1e-9)
        p50, p99 = self.latency.run_percentiles()
        return RunSummary(
            pipeline=self.spec.name,
            rows_read=self.stats.rows_read,
            rows_predicted=self.stats.rows_predicted,
            rows_dead=self.stats.rows_dead,
            seconds=seconds,
            model_ids=sorted(self.stats.model_ids),
            output=writer.sink.describe(),
            dead_letter=writer.dead_letter_output(),
            model_errors=list(self.stats.model_errors),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            with_model=bool(self.spec.all_models),
            duplicate_keys=self.stats.duplicate_keys,
            table_sink=is_table_sink(self.spec),
            status="interrupted" if self._interrupted else "ok",
            outputs_discarded=self._interrupted and self.spec.sink.kind in FILE_SINK_KINDS,
            window_output=writer.windows.describe() if writer.windows is not None else None,
            window_rows=writer.windows.rows_written if writer.windows is not None else 0,
            rows_late=writer.windows.operator.late if writer.windows is not None else 0,
        )

    def _start_reader(self, source: Source, out: queue.Queue[Any]) -> threading.Thread:
        """Open a bounded `source` and start reading it into `out` on the reader thread."""
        source.open()
        self.stats.progress_total = source.progress_total()
        thread = threading.Thread(target=self._read, args=(source, out), name="inferline-read", daemon=True)
        thread.start()
        return thread

    def _stop_reader(
        self, reader: threading.Thread | None, read_q: queue.Queue[Any], source: Source, refs: list[ModelRef]
    ) -> None:
        """Setting up the run failed once the source was open: stop reading, close what opened."""
        self._abort.set()
        self.stop.set()
        if reader is not None:
            drain(read_q)
            reader.join(timeout=10)
        source.close()
        for ref in refs:
            ref.close()
        if self._loader is not None:
            self._loader.close()

    def _interrupting(self, source: Source) -> bool:
        """Whether the run ends now: a second signal, or the first one on a bounded source."""
        if self._interrupted:
            return True
        # A failure sets `_abort` before `stop`, so a failing run is not taken for an interrupt.
        stopped = self.stop.is_set() and source.bounded and not self._abort.is_set()
        if self.interrupt.is_set() or stopped:
            self._interrupted = True
            self._abort.set()  # the reader and predict workers drop what they hold
        return self._interrupted

    def _writer_wait(self) -> float:
        # Wake up now and then to see a stop even while no batch is coming (a slow model).
        wait = self._stats_wait()
        return 0.1 if wait is None else min(wait, 0.1)

    # --- stream stats -----------------------------------------------------------------
    def _stats_wait(self) -> float | None:
        """How long the writer may wait for a batch before the next stats line is due."""
        if self._next_stats is None:
            return None
        return max(self._next_stats - self.clock(), 0.001)

    def _maybe_report(self, source: Source, *, final: bool = False) -> None:
        if self._next_stats is None or (self.clock() < self._next_stats and not final):
            return
        now = self.clock()
        backlog = source.backlog() if isinstance(source, TopicSource) else None
        stats = self.latency.interval(now - self._last_stats, backlog)
        self._last_stats, self._next_stats = now, now + (self.stats_every or 0.0)
        if self.on_stats is not None:
            self.on_stats(stats)

    def _count(self, item: Work) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows_read += item.source.data.num_rows + sum(1 for d in item.source.dead)
        stats.rows_predicted += item.results.num_rows if item.results is not None else 0
        stats.rows_dead += len(item.dead)
        published = item.source.published_at
        if published:
            # Committed and acked just now: publish -> commit, on the wall clock.
            latency = time.time() - np.asarray(published, dtype=np.float64)
            self.latency.record(latency, len(published) + len(item.source.dead))
        if item.source.progress is not None:
            stats.progress_done = item.source.progress
        if self.on_progress is not None:
            self.on_progress(stats)

    def _put(self, q: queue.Queue[Any], item: Any, *, force: bool = False) -> None:
        # Blocks for back-pressure, but gives up when the run is stopping.
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._abort.is_set() and not force:
                    return
                if self._abort.is_set():
                    drain(q)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._abort.set()
        self.stop.set()


def run_pipeline(spec: PipelineSpec, **options: Any) -> RunSummary:
    """Run `spec` on the local engine and return its summary.

    Example:
        >>> summary = run_pipeline(load_spec("examples/iris/pipeline.yaml"))  # doctest: +SKIP
        >>> summary.rows_predicted  # doctest: +SKIP
        150
    """
    return LocalEngine(spec, **options).run()
