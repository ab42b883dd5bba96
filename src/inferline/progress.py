"""Progress bar and run summary for the CLI (rich), kept out of the engine."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from inferline.engine.run_summary import RunStats, RunSummary


class ProgressDisplay:
    """Rows, rows/s and, when the input size is known, a bar with an ETA."""

    def __init__(self, console: Console, *, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[rows]:>12,} rows"),
                TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
                TextColumn("{task.fields[dead]} dead"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> ProgressDisplay:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, rows=0, rate=0.0, dead=0)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, stats: RunStats) -> None:
        if self._progress is None or self._task is None:
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._progress.update(
            self._task,
            total=stats.progress_total or None,
            completed=stats.progress_done,
            rows=stats.rows_read,
            rate=stats.rows_read / elapsed,
            dead=stats.rows_dead,
        )


def print_summary(console: Console, summary: RunSummary) -> None:
    """The end-of-run summary: counts, speed, model versions, where output went."""
    done = "predicted" if summary.with_model else "written"
    # Rows that are neither written nor dead-lettered were filtered out by `steps:`.
    filtered = summary.rows_read - summary.rows_predicted - summary.rows_dead
    interrupted = summary.status == "interrupted"
    console.print(
        f"{summary.pipeline}: {'interrupted: ' if interrupted else ''}"
        f"{summary.rows_read:,} rows read, {summary.rows_predicted:,} {done}, "
        f"{summary.rows_dead:,} dead-lettered"
        + (f", {filtered:,} filtered out by steps" if filtered > 0 else "")
        + (
            f", {summary.duplicate_keys:,} duplicate keys"
            + (" (last write wins)" if summary.table_sink else "")
            if summary.duplicate_keys
            else ""
        )
        + f" in {summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s)",
        markup=False,
    )
    if summary.model_ids:
        console.print(f"model: {', '.join(summary.model_ids)}", markup=False)
    if summary.latency_p50_ms is not None and summary.latency_p99_ms is not None:
        console.print(
            f"latency: p50 {summary.latency_p50_ms:,.0f} ms, p99 {summary.latency_p99_ms:,.0f} ms "
            "(publish -> committed)",
            markup=False,
        )
    console.print(f"output: {summary.output}{_kept(summary, summary.rows_predicted)}", markup=False)
    if summary.window_output:
        console.print(
            f"windows: {summary.window_rows:,} rows to {summary.window_output}, "
            f"{summary.rows_late:,} rows too late (dead-lettered, stage late)",
            markup=False,
        )
    if summary.dead_letter:
        console.print(f"dead letters: {summary.dead_letter}{_kept(summary, summary.rows_dead)}", markup=False)
    for message in summary.model_errors:
        console.print(f"model load error: {message}", markup=False)


def _kept(summary: RunSummary, rows: int) -> str:
    """After an interrupt: what the output holds, and how to finish."""
    if summary.status != "interrupted":
        return ""
    if summary.outputs_discarded:
        return " not written (a file is written only by a complete run; run again)"
    return f" ({rows:,} rows written stay; run again to finish: rows are upserted on key)"
