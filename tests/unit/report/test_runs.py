"""Run history: written to DuckDB or JSONL, read back newest last, failures included."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from inferline.engine.local import RunStats, RunSummary
from inferline.pipeline import parse_spec
from inferline.report.runs import (
    RUNS_TABLE,
    RunRecord,
    read_runs,
    record_run,
    runs_location,
    write_run_duckdb,
    write_run_jsonl,
)


def _spec(sink: dict[str, str]):  # type: ignore[no-untyped-def]
    return parse_spec(
        {
            "name": "flowers",
            "source": {"kind": "csv", "path": "in/*.csv"},
            "model": {"name": "iris", "uri": "m.joblib", "inputs": ["a"]},
            "sink": sink,
        },
        origin="flowers.yaml",
    )


def _record(minute: int, status: str = "ok", table: str | None = "t") -> RunRecord:
    start = dt.datetime(2026, 1, 1, 12, minute, tzinfo=dt.timezone.utc)
    return RunRecord(
        pipeline="p",
        spec="p.yaml",
        started_at=start,
        ended_at=start + dt.timedelta(seconds=2),
        status=status,
        model_ids=["iris/1"],
        output_table=table,
        rows_read=100 * (minute + 1),
        rows_per_second=50.0 * (minute + 1),
    )


def test_duckdb_history_round_trips_and_filters_by_table(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    for minute in (3, 1, 2):
        write_run_duckdb(db, _record(minute))
    write_run_duckdb(db, _record(4, table="other"))
    runs = read_runs(db, table="t", limit=2)
    assert [r["rows_read"] for r in runs] == [300, 400]  # the last two, oldest first
    assert runs[0]["model_ids"] == ["iris/1"] and runs[0]["status"] == "ok"
    assert runs[0]["started_at"] == dt.datetime(2026, 1, 1, 12, 2, tzinfo=dt.timezone.utc)
    assert len(read_runs(db)) == 4
    assert read_runs(str(tmp_path / "missing.duckdb")) == []


def test_an_older_runs_table_gains_new_columns(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    with duckdb.connect(db) as con:
        con.execute(f"CREATE TABLE {RUNS_TABLE} (run_id VARCHAR, pipeline VARCHAR, started_at TIMESTAMPTZ)")
    write_run_duckdb(db, _record(0))
    (run,) = read_runs(db)
    assert run["rows_read"] == 100 and run["error"] is None


def test_jsonl_history_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "out" / "inferline_runs.jsonl")
    write_run_jsonl(path, _record(2))
    write_run_jsonl(path, _record(1, status="error"))
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert lines[0]["started_at"] == "2026-01-01T12:02:00+00:00"
    runs = read_runs(path)
    assert [r["status"] for r in runs] == ["error", "ok"]
    assert isinstance(runs[0]["started_at"], dt.datetime)


def test_runs_location_follows_the_sink() -> None:
    assert runs_location(_spec({"kind": "duckdb", "path": "w.duckdb"})) == "w.duckdb table inferline_runs"
    assert runs_location(_spec({"kind": "parquet", "path": "out/p.parquet"})) == "out/inferline_runs.jsonl"
    assert runs_location(_spec({"kind": "jsonl", "path": "s3://b/p.jsonl"})) == "inferline_runs.jsonl"


def test_record_run_writes_a_summary(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    spec = _spec({"kind": "duckdb", "path": db, "table": "preds"})
    with record_run(spec, RunStats()) as run:
        run.summary = RunSummary("flowers", 10, 9, 1, 0.5, ["iris/2"], "out", None)
    (row,) = read_runs(db, table="preds")
    assert (row["rows_read"], row["rows_predicted"], row["rows_dead"]) == (10, 9, 1)
    assert row["rows_per_second"] == pytest.approx(20.0)
    assert row["model_ids"] == ["iris/2"] and row["spec"] == "flowers.yaml" and row["status"] == "ok"
    assert row["source"] == "in/*.csv" and row["ended_at"] >= row["started_at"]


def test_record_run_records_a_failure_with_its_counters_and_reraises(tmp_path: Path) -> None:
    spec = _spec({"kind": "csv", "path": str(tmp_path / "p.csv")})
    stats = RunStats(rows_read=7, rows_predicted=7)
    stats.model_ids.add("iris/1")
    with pytest.raises(ValueError, match="boom"), record_run(spec, stats):
        raise ValueError("boom\nsecond line")
    (row,) = read_runs(str(tmp_path / "inferline_runs.jsonl"))
    assert row["status"] == "error" and row["error"] == "boom"
    assert row["rows_read"] == 7 and row["model_ids"] == ["iris/1"]


def test_a_history_that_cannot_be_written_warns_but_does_not_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "w.duckdb").write_text("not a database")
    spec = _spec({"kind": "duckdb", "path": str(tmp_path / "w.duckdb")})
    with record_run(spec) as run:
        run.summary = RunSummary("flowers", 1, 1, 0, 0.1, [], "out", None)
    assert (
        f"warning: run not recorded in {tmp_path / 'w.duckdb'} table inferline_runs"
        in capsys.readouterr().err
    )
