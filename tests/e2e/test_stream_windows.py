"""`window:` through the CLI: hand-computed windows from a file and from a live topic,
and a SIGKILL mid-window that neither loses nor double-counts a row."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import duckdb

from inferline.engine.local import run_pipeline
from inferline.io.topics import open_topic
from inferline.pipeline import load_spec
from tests.conftest import CliRunner
from tests.e2e.streaming import Probe, kill_mid_stream, start_runner, stop

BASE = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
# Iris flowers the model surely gets right: setosa (0), versicolor (1), virginica (2).
FLOWERS = {0: [5.1, 3.5, 1.4, 0.2], 1: [7.0, 3.2, 4.7, 1.4], 2: [6.3, 3.3, 6.0, 2.5]}

SPEC = """\
name: iris-windows
source: {source}
model: {{name: iris, uri: examples/iris/models/iris-*.onnx, inputs: feature}}
keep: [id, ts]
sink: {{kind: duckdb, path: warehouse.duckdb, table: iris_rows}}
window:
  kind: {kind}
  {extent}
  time: ts
  allowed_lateness: 5s
  group_by: [prediction]
  aggregates: {{n: "count(*)", ids: "list(id ORDER BY id)"}}
  sink: {{kind: duckdb, path: warehouse.duckdb, table: iris_windows}}
batch: {{max_size: {max_size}, max_wait_ms: 20}}
"""

# (id, event second, class) in arrival order. Fixed 10 s windows, lateness 5 s:
# id 4 (t=7) comes when the max is 12: watermark 7 < end 10, counted. id 6 (t=3) comes at
# max 18 (watermark 13 >= 10): late. id 10 (t=2): late. id 11 (t=100) moves the watermark
# to 95, closing every earlier window on the stream too.
EVENTS = [(0, 1, 0), (1, 4, 1), (2, 9, 0), (3, 12, 2), (4, 7, 1), (5, 18, 0), (6, 3, 2)]
EVENTS += [(7, 21, 1), (8, 14, 0), (9, 16, 1), (10, 2, 0), (11, 100, 0)]
FIXED = [
    (0, 10, 0, 2, [0, 2]),
    (0, 10, 1, 2, [1, 4]),
    (10, 20, 0, 2, [5, 8]),
    (10, 20, 1, 1, [9]),
    (10, 20, 2, 1, [3]),
    (20, 30, 1, 1, [7]),
]
FINAL = (100, 110, 0, 1, [11])  # closed by the end of a file; still open on a stream


def message(i: int, second: float, cls: int) -> dict[str, Any]:
    stamp = BASE + datetime.timedelta(seconds=second)
    return {"id": i, "ts": stamp.isoformat().replace("+00:00", "Z"), "feature": FLOWERS[cls]}


def write_spec(
    project: Path, source: str, *, kind: str = "fixed", extent: str = "size: 10s", max_size: int = 3
) -> None:
    text = SPEC.format(source=source, kind=kind, extent=extent, max_size=max_size)
    (project / "stream.yaml").write_text(text)


def windows(project: Path, *, until: float | None = None) -> list[tuple[Any, ...]]:
    base = int(BASE.timestamp())
    where = f"WHERE epoch(window_end) - {base} <= {until}" if until is not None else ""
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql(
            f"SELECT epoch(window_start)::BIGINT - {base}, epoch(window_end)::BIGINT - {base}, "
            f"prediction, n, ids FROM iris_windows {where} ORDER BY 1, 2, 3"
        ).fetchall()
    return [tuple(r) for r in rows]


def late_keys(project: Path) -> int:
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        (row,) = con.sql("SELECT count(*) FROM iris_rows_errors WHERE stage = 'late'").fetchall()
    return int(row[0])


def kill_then_finish(project: Path, events: list[dict[str, Any]], *, after: int) -> None:
    """Publish `events` to the project's topic, SIGKILL its run after `after` acks, rerun to the end."""
    topic = open_topic(str(project / "queue.db"), "iris")
    topic.publish([json.dumps(e).encode() for e in events])
    topic.close()
    probe = Probe(str(project / "queue.db"))
    try:
        kill_mid_stream(project, probe, len(events), after=after)
        runner = start_runner(project, "--until-idle", "1")
        try:
            probe.wait(lambda: runner.poll() is not None, None, timeout=120)
        finally:
            stop(runner)
    finally:
        probe.close()
    assert runner.returncode == 0


def test_fixed_windows_from_a_file_and_from_the_topic_are_the_same(project: Path, cli: CliRunner) -> None:
    lines = "".join(json.dumps(message(*e)) + "\n" for e in EVENTS)
    (project / "events.jsonl").write_text(lines)
    write_spec(project, "{kind: jsonl, path: events.jsonl}")
    result = cli("run", "stream.yaml", "--no-progress")
    assert "12 rows read, 12 predicted, 2 dead-lettered" in result.stdout
    assert "windows: 7 rows to warehouse.duckdb table iris_windows, 2 rows too late" in result.stdout
    assert windows(project) == [*FIXED, FINAL]
    assert late_keys(project) == 2

    (project / "warehouse.duckdb").unlink()
    write_spec(project, '{kind: topic, url: "queue.db", topic: iris}')
    cli("publish", "iris", "--url", "queue.db", "--from", "events.jsonl")
    streamed = cli("run", "stream.yaml", "--no-progress", "--until-idle", "0.5")
    assert "windows: 6 rows to warehouse.duckdb table iris_windows, 2 rows too late" in streamed.stdout
    assert windows(project) == FIXED
    # The open window [100, 110) waits in the state file for the next run.
    with duckdb.connect(str(project / "iris_windows_window_state.duckdb"), read_only=True) as con:
        assert con.sql("SELECT id FROM window_rows").fetchall() == [(11,)]


def test_sliding_and_session_windows_from_a_file(project: Path, cli: CliRunner) -> None:
    (project / "events.jsonl").write_text("".join(json.dumps(message(*e)) + "\n" for e in EVENTS))
    # Sliding 20 s every 10 s: id 6 (t=3, watermark 13) and id 10 (t=2, watermark 16) still
    # count in [0, 20) but not in the closed [-10, 10); nothing is late.
    extent = "size: 20s\n  every: 10s"
    write_spec(project, "{kind: jsonl, path: events.jsonl}", kind="sliding", extent=extent)
    result = cli("run", "stream.yaml", "--no-progress")
    assert "0 rows too late" in result.stdout
    assert windows(project) == [
        (-10, 10, 0, 2, [0, 2]),
        (-10, 10, 1, 2, [1, 4]),
        (0, 20, 0, 5, [0, 2, 5, 8, 10]),
        (0, 20, 1, 3, [1, 4, 9]),
        (0, 20, 2, 2, [3, 6]),
        (10, 30, 0, 2, [5, 8]),
        (10, 30, 1, 2, [7, 9]),
        (10, 30, 2, 1, [3]),
        (20, 40, 1, 1, [7]),
        (90, 110, 0, 1, [11]),
        (100, 120, 0, 1, [11]),
    ]
    # Sessions with a 5 s gap per class (rows 5 s apart or more do not merge): 0 -> {1}, {9},
    # {14, 18}, {100}, and t=2 comes at watermark 16 (2+5 <= 16): late; 1 -> {4, 7}, {16},
    # {21}; 2 -> {12}, and t=3 comes at watermark 13: late.
    # The session windows go to a topic this time (any sink kind takes windowed rows).
    write_spec(project, "{kind: jsonl, path: events.jsonl}", kind="session", extent="gap: 5s")
    spec = (project / "stream.yaml").read_text()
    window_sink = "sink: {kind: duckdb, path: warehouse.duckdb, table: iris_windows}"
    (project / "stream.yaml").write_text(
        spec.replace(f"  {window_sink}", '  sink: {kind: topic, url: "windows.db", topic: windows}')
    )
    result = cli("run", "stream.yaml", "--no-progress")
    assert "windows: 8 rows to topic windows at windows.db, 2 rows too late" in result.stdout
    topic = open_topic(str(project / "windows.db"), "windows")
    consumer = topic.consumer("check", "c")
    messages = [json.loads(m.body) for m in consumer.read(100, timeout=1.0)]
    consumer.close()
    topic.close()
    base = BASE.replace(tzinfo=None)
    sessions = [
        (
            int((datetime.datetime.fromisoformat(m["window_start"]) - base).total_seconds()),
            int((datetime.datetime.fromisoformat(m["window_end"]) - base).total_seconds()),
            m["prediction"],
            m["n"],
            m["ids"],
        )
        for m in messages
    ]
    assert sorted(sessions) == [
        (1, 6, 0, 1, [0]),
        (4, 12, 1, 2, [1, 4]),
        (9, 14, 0, 1, [2]),
        (12, 17, 2, 1, [3]),
        (14, 23, 0, 2, [5, 8]),
        (16, 21, 1, 1, [9]),
        (21, 26, 1, 1, [7]),
        (100, 105, 0, 1, [11]),
    ]


def test_a_sigkill_mid_window_neither_loses_nor_double_counts(project: Path, cli: CliRunner) -> None:
    # 800 events 0.1 s apart; every 7th comes 3 s late (within lateness), every 50th 30 s late
    # (dropped). The batch engine over the file is the reference; the stream is killed after
    # 300 acks (of batches of 20), so the kill lands in the middle of open windows.
    events = []
    seconds = []
    for i in range(800):
        second = max(i * 0.1 - (3 if i % 7 == 3 else 0) - (30 if i % 50 == 49 else 0), 0.0)
        seconds.append(second)
        events.append(message(i, second, i % 3))
    (project / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    extent = "size: 20s\n  every: 5s"
    write_spec(project, "{kind: jsonl, path: events.jsonl}", kind="sliding", extent=extent, max_size=20)
    run_pipeline(load_spec(str(project / "stream.yaml")))
    closed_by_stream = max(seconds) - 5  # the stream's final watermark
    expected = windows(project, until=closed_by_stream)
    expected_late = late_keys(project)
    assert len(expected) == 42 and expected_late == 11

    (project / "warehouse.duckdb").unlink()
    write_spec(
        project, '{kind: topic, url: "queue.db", topic: iris}', kind="sliding", extent=extent, max_size=25
    )
    kill_then_finish(project, events, after=300)
    assert windows(project) == expected
    assert late_keys(project) == expected_late


def test_pane_partials_survive_a_sigkill_like_rows(project: Path, cli: CliRunner) -> None:
    # Count, max and min of plain columns: the open windows are panes (reduced by Arrow), not rows. Every
    # 9th event comes 4 s late (within lateness), every 40th 40 s late (dropped); the kill
    # lands after 120 acks of batches of 15, mid-window; the file run is the reference.
    events = []
    seconds = []
    for i in range(400):
        second = max(i * 0.1 - (4 if i % 9 == 4 else 0) - (40 if i % 40 == 39 else 0), 0.0)
        seconds.append(second)
        events.append(message(i, second, i % 3))
    (project / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    extent = "size: 10s\n  every: 5s"
    aggregates = 'n: "count(*)", top: "max(id)", low: "min(id)"'

    def spec(source: str, max_size: int) -> None:
        write_spec(project, source, kind="sliding", extent=extent, max_size=max_size)
        text = (project / "stream.yaml").read_text()
        (project / "stream.yaml").write_text(
            text.replace('n: "count(*)", ids: "list(id ORDER BY id)"', aggregates)
        )

    def panes(until: float) -> list[tuple[Any, ...]]:
        base = int(BASE.timestamp())
        with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
            rows = con.sql(
                f"SELECT epoch(window_start)::BIGINT - {base}, prediction, n, top, low "
                f"FROM iris_windows WHERE epoch(window_end) - {base} <= {until} ORDER BY 1, 2"
            ).fetchall()
        return [tuple(r) for r in rows]

    spec("{kind: jsonl, path: events.jsonl}", 15)
    run_pipeline(load_spec(str(project / "stream.yaml")))
    expected, expected_late = panes(max(seconds) - 5), late_keys(project)
    assert len(expected) > 15 and expected_late > 0

    (project / "warehouse.duckdb").unlink()
    spec('{kind: topic, url: "queue.db", topic: iris}', 15)
    kill_then_finish(project, events, after=120)
    assert panes(max(seconds)) == expected
    assert late_keys(project) == expected_late
    with duckdb.connect(str(project / "iris_windows_window_state.duckdb"), read_only=True) as con:
        tables = {name for (name,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "window_pane_keys" in tables and "window_rows" not in tables  # partials were kept, not rows
