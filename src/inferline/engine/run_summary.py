"""What a run reports: live counters (`RunStats`) and the final `RunSummary`.

Both engines fill them (`engine/local.py` directly, `engine/beam.py` after the pipeline
ends); progress displays and `report/runs.py` read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunStats:
    """Counters the engine updates as it goes; read by progress displays."""

    rows_read: int = 0
    rows_predicted: int = 0
    rows_dead: int = 0
    batches: int = 0
    # Where the input stands after the rows written so far, of `progress_total` (the source's
    # unit: bytes of rows for files, else rows); None when the source does not know its size.
    progress_done: int = 0
    progress_total: int | None = None
    # Rows written whose key an earlier row of the run already had (bounded runs with `key:`).
    duplicate_keys: int = 0
    model_ids: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    # Model versions that failed to load while watching (one message per version).
    model_errors: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    """What a run did; printed by the CLI at the end."""

    pipeline: str
    rows_read: int
    rows_predicted: int
    rows_dead: int
    seconds: float
    model_ids: list[str]
    output: str
    dead_letter: str | None
    status: str = "ok"
    model_errors: list[str] = field(default_factory=list)
    # Streams: end-to-end latency, publish -> committed, over the run.
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    # False for pure data preparation (no model): result rows are "written", not "predicted".
    with_model: bool = True
    # Rows whose key was already written in this run; a table sink keeps the last of each.
    duplicate_keys: int = 0
    table_sink: bool = False
    # Interrupted: file outputs were removed rather than left partial.
    outputs_discarded: bool = False
    # `window:`: where the windowed rows went, how many were written, rows too late for any.
    window_output: str | None = None
    window_rows: int = 0
    rows_late: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0
