"""Run history: one row per `inferline run` in an `inferline_runs` table or file.

A run that writes to a DuckDB sink is recorded in the table `inferline_runs` of the same
database file, opened only after the sink has closed (DuckDB allows one writer). Runs into
other sinks append a JSON line to `inferline_runs.jsonl` next to their output (or in the
current directory when the output is not a local file). Failed runs are recorded too,
with status `error` and the message.

Example:
    >>> with record_run(spec, engine.stats) as run:  # doctest: +SKIP
    ...     run.summary = engine.run()
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from inferline.io.duckdb import quote
from inferline.io.targets import check_output

if TYPE_CHECKING:
    from inferline.engine.run_summary import RunStats, RunSummary
    from inferline.pipeline import PipelineSpec

RUNS_TABLE = "inferline_runs"
RUNS_FILE = "inferline_runs.jsonl"

# column -> DuckDB type; new columns are appended here and added to old tables on write.
RUN_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR",
    "pipeline": "VARCHAR",
    "spec": "VARCHAR",
    "runner": "VARCHAR",
    "model_ids": "VARCHAR[]",
    "source": "VARCHAR",
    "output": "VARCHAR",
    "output_table": "VARCHAR",
    "rows_read": "BIGINT",
    "rows_predicted": "BIGINT",
    "rows_dead": "BIGINT",
    "rows_per_second": "DOUBLE",
    "seconds": "DOUBLE",
    "started_at": "TIMESTAMPTZ",
    "ended_at": "TIMESTAMPTZ",
    "status": "VARCHAR",
    "error": "VARCHAR",
    "duplicate_keys": "BIGINT",
}


@dataclass
class RunRecord:
    """One row of run history."""

    pipeline: str
    spec: str
    started_at: dt.datetime
    ended_at: dt.datetime
    status: str
    runner: str = "local"
    model_ids: list[str] = field(default_factory=list)
    source: str | None = None
    output: str | None = None
    output_table: str | None = None
    rows_read: int = 0
    rows_predicted: int = 0
    rows_dead: int = 0
    rows_per_second: float = 0.0
    seconds: float = 0.0
    error: str | None = None
    duplicate_keys: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        return {name: row[name] for name in RUN_COLUMNS}


class RunRecorder:
    """Collects what a run did; `record_run` writes it when the run ends."""

    def __init__(self, spec: PipelineSpec, stats: RunStats | None, *, runner: str = "local") -> None:
        self.spec = spec
        self.stats = stats
        self.runner = runner
        self.summary: RunSummary | None = None
        self.started_at = _now()

    def record(self, *, status: str | None = None, error: str | None = None) -> RunRecord:
        """The history row for this run, from its summary or (after a failure) its counters."""
        ended = _now()
        seconds = max((ended - self.started_at).total_seconds(), 1e-9)
        record = RunRecord(
            pipeline=self.spec.name,
            spec=self.spec.origin,
            started_at=self.started_at,
            ended_at=ended,
            status=status or "ok",
            runner=self.runner,
            source=_describe_source(self.spec),
            output=self.spec.sink.describe(),
            output_table=self.spec.sink.table if self.spec.sink.kind == "duckdb" else None,
            error=error,
        )
        summary, stats = self.summary, self.stats
        if summary is not None:
            record.status = status or summary.status
            if record.status == "interrupted" and record.error is None:
                record.error = "interrupted"
            record.model_ids = list(summary.model_ids)
            record.rows_read, record.rows_predicted = summary.rows_read, summary.rows_predicted
            record.rows_dead, record.seconds = summary.rows_dead, summary.seconds
            record.output = summary.output
            record.duplicate_keys = summary.duplicate_keys
        elif stats is not None:
            record.model_ids = sorted(stats.model_ids)
            record.rows_read, record.rows_predicted = stats.rows_read, stats.rows_predicted
            record.rows_dead, record.seconds = stats.rows_dead, seconds
            record.duplicate_keys = stats.duplicate_keys
        else:
            record.seconds = seconds
        record.rows_per_second = record.rows_read / record.seconds if record.seconds > 0 else 0.0
        return record


@contextmanager
def record_run(
    spec: PipelineSpec, stats: RunStats | None = None, *, runner: str = "local"
) -> Iterator[RunRecorder]:
    """Record the run inside the `with` block in the sink's run history.

    Set `recorder.summary` at the end of the block. An exception records status `error`
    (or `interrupted` for Ctrl-C) with its message and is re-raised. A history that cannot
    be written never fails the run: on success it is reported as a warning.
    """
    recorder = RunRecorder(spec, stats, runner=runner)
    try:
        yield recorder
    except KeyboardInterrupt:
        _write_quietly(spec, recorder.record(status="interrupted", error="interrupted"))
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _write_quietly(spec, recorder.record(status="error", error=message))
        raise
    record = recorder.record()
    try:
        write_run(spec, record)
    except Exception as exc:  # noqa: BLE001 - history is secondary to the run itself
        import sys

        print(f"warning: run not recorded in {runs_location(spec)}: {exc}", file=sys.stderr)


def _write_quietly(spec: PipelineSpec, record: RunRecord) -> None:
    # The run's own error is the one line the user must see; history is best effort.
    try:
        write_run(spec, record)
    except Exception:  # noqa: BLE001
        pass


def runs_location(spec: PipelineSpec) -> str:
    """Where runs of `spec` are recorded: `<db> table inferline_runs` or a JSONL path."""
    sink = spec.sink
    if sink.kind == "duckdb" and sink.path:
        return f"{sink.path} table {RUNS_TABLE}"
    return runs_file(spec)


def runs_file(spec: PipelineSpec) -> str:
    path = spec.sink.path
    if path and "://" not in path:
        return os.path.join(os.path.dirname(path), RUNS_FILE)
    return RUNS_FILE


def write_run(spec: PipelineSpec, record: RunRecord) -> None:
    """Append `record` to the run history of `spec`'s sink."""
    # The history never replaces a file of another kind either (a refused sink's path).
    sink = spec.sink
    if sink.kind == "duckdb" and sink.path:
        check_output(sink.path, "duckdb")
        write_run_duckdb(sink.path, record)
    else:
        check_output(runs_file(spec), "jsonl")
        write_run_jsonl(runs_file(spec), record)


def write_run_duckdb(path: str, record: RunRecord) -> None:
    """Insert `record` into `inferline_runs` in the DuckDB file at `path`."""
    from inferline.io import warehouse

    with warehouse.connect(path, read_only=False) as con:
        columns = ", ".join(f"{quote(n)} {t}" for n, t in RUN_COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} ({columns})")
        existing = {
            name
            for (name,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_catalog = current_database()",
                [RUNS_TABLE],
            ).fetchall()
        }
        for name, dtype in RUN_COLUMNS.items():
            if name not in existing:
                con.execute(f"ALTER TABLE {RUNS_TABLE} ADD COLUMN {quote(name)} {dtype}")
        row = record.as_row()
        names = ", ".join(quote(n) for n in row)
        marks = ", ".join("?" for _ in row)
        con.execute(f"INSERT INTO {RUNS_TABLE} ({names}) VALUES ({marks})", list(row.values())).fetchall()


def write_run_jsonl(path: str, record: RunRecord) -> None:
    """Append `record` as one JSON line to `path` (one write, so lines never interleave)."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    line = json.dumps(record.as_row(), default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_runs(path: str, *, table: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The last `limit` runs (oldest first) from a DuckDB file or a runs JSONL file.

    `table` keeps only runs that wrote into that DuckDB table. A missing history is empty.
    """
    if not os.path.exists(path):
        return []
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        for row in rows:
            for name in ("started_at", "ended_at"):
                if isinstance(row.get(name), str):
                    row[name] = dt.datetime.fromisoformat(row[name])
        if table is not None:
            rows = [r for r in rows if r.get("output_table") == table]
        rows.sort(key=lambda r: r["started_at"])
        return rows[-limit:]
    from inferline.io import warehouse

    with warehouse.connect(path) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
            "AND table_catalog = current_database()",
            [RUNS_TABLE],
        ).fetchall()
        if not found[0][0]:
            return []
        where = "WHERE output_table = ?" if table is not None else ""
        params = [table] if table is not None else []
        result = con.execute(
            f"SELECT * FROM (SELECT * FROM {RUNS_TABLE} {where} ORDER BY started_at DESC LIMIT {int(limit)}) "
            "ORDER BY started_at",
            params,
        )
        names = [d[0] for d in result.description or []]
        return [dict(zip(names, values, strict=True)) for values in result.fetchall()]


def _describe_source(spec: PipelineSpec) -> str | None:
    src = spec.source
    if src.table and src.path:
        return f"{src.path} table {src.table}"
    if src.topic:
        return f"topic {src.topic} at {src.url}"
    return src.path or src.url


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)
