"""WindowOperator: hand-computed fixed, sliding and session windows, lateness, restart."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from inferline.engine.windows import WindowError, WindowOperator
from inferline.errors import SpecError
from inferline.pipeline import WindowSpec, parse_spec

# (event time in seconds, class, score), in arrival order: out of order, some too late.
EVENTS = [
    (1, 0, 0.1),
    (5, 1, 0.9),
    (12, 0, 0.2),
    (8, 1, 0.8),
    (25, 0, 0.3),
    (3, 0, 0.5),
    (31, 1, 0.7),
    (14, 1, 0.6),
]


def window(**raw: Any) -> WindowSpec:
    base: dict[str, Any] = {
        "time": "t",
        "group_by": ["cls"],
        "aggregates": {"n": "count(*)", "ids": "list(id ORDER BY id)"},
        "sink": {"kind": "jsonl", "path": "w.jsonl"},
    }
    return WindowSpec.model_validate({**base, **raw})


def batch(events: list[tuple[int, int, float]], first_id: int = 0) -> pa.RecordBatch:
    ids = list(range(first_id, first_id + len(events)))
    return pa.RecordBatch.from_pydict(
        {
            "key": [f"m{i}" for i in ids],
            "id": ids,
            "t": [float(t) for t, _, _ in events],
            "cls": [c for _, c, _ in events],
            "score": [s for _, _, s in events],
        }
    )


def run(spec: WindowSpec, sizes: int, state: str | None = None) -> tuple[list[tuple[Any, ...]], list[str]]:
    op = WindowOperator(spec)
    op.open(state)
    rows: list[tuple[Any, ...]] = []
    late: list[str] = []
    for start in range(0, len(EVENTS), sizes):
        letters = op.add(batch(EVENTS[start : start + sizes], start), ingest_time=0)
        late += [d.key for d in letters]
        assert all(d.stage == "late" for d in letters)
        rows += collect(op.close())
    rows += collect(op.close(final=True))
    op.close_state()
    return sorted(rows), late


def seconds(value: datetime.datetime) -> int:
    return int((value - datetime.datetime(1970, 1, 1)).total_seconds())


def collect(table: pa.Table | None) -> list[tuple[Any, ...]]:
    if table is None:
        return []
    return [
        (seconds(r["window_start"]), seconds(r["window_end"]), r["cls"], r["n"], r["ids"])
        for r in table.to_pylist()
    ]


@pytest.mark.parametrize("sizes", [1, 3, 8])
def test_fixed_windows_drop_rows_behind_the_watermark(sizes: int) -> None:
    # lateness 10 s: t=3 arrives when max is 25 (watermark 15 >= end 10): late; t=14 arrives
    # when max is 31 (watermark 21 >= 20): late. The answer does not depend on batch sizes.
    rows, late = run(window(kind="fixed", size="10s", allowed_lateness="10s"), sizes)
    assert rows == [
        (0, 10, 0, 1, [0]),
        (0, 10, 1, 2, [1, 3]),
        (10, 20, 0, 1, [2]),
        (20, 30, 0, 1, [4]),
        (30, 40, 1, 1, [6]),
    ]
    assert late == ["m5", "m7"]


@pytest.mark.parametrize("sizes", [1, 2, 8])
def test_sliding_windows_count_a_row_in_each_open_window(sizes: int) -> None:
    # size 20 every 10, lateness 5 s. t=3 (max 25, watermark 20): windows [-10,10) and [0,20)
    # have closed -> late. t=14 (max 31, watermark 26): [0,20) closed, [10,30) open -> counted there.
    # t=25 counts in [10,30) and [20,40). A close expands only the windows it ends: one at a
    # time (sizes 1) or all at once (sizes 8, the final close) give the same rows.
    rows, late = run(window(kind="sliding", size="20s", every="10s", allowed_lateness="5s"), sizes)
    assert rows == [
        (-10, 10, 0, 1, [0]),
        (-10, 10, 1, 2, [1, 3]),
        (0, 20, 0, 2, [0, 2]),
        (0, 20, 1, 2, [1, 3]),
        (10, 30, 0, 2, [2, 4]),
        (10, 30, 1, 1, [7]),
        (20, 40, 0, 1, [4]),
        (20, 40, 1, 1, [6]),
        (30, 50, 1, 1, [6]),
    ]
    assert late == ["m5"]


def test_session_windows_merge_rows_closer_than_the_gap() -> None:
    # gap 6 s, lateness 10 s. Class 0: 1, 12, 25 (t=3 arrives at max 25: 3+6 <= 15 -> late).
    # Class 1: 5, 8 -> one session [5, 14); 31; t=14 arrives at max 31: 14+6 <= 21 -> late.
    rows, late = run(window(kind="session", gap="6s", allowed_lateness="10s"), 3)
    assert rows == [
        (1, 7, 0, 1, [0]),
        (5, 14, 1, 2, [1, 3]),
        (12, 18, 0, 1, [2]),
        (25, 31, 0, 1, [4]),
        (31, 37, 1, 1, [6]),
    ]
    assert late == ["m5", "m7"]


def test_windows_close_as_the_watermark_passes_and_state_survives_a_restart(tmp_path: Path) -> None:
    spec = window(kind="fixed", size="10s", allowed_lateness="0s")
    state = str(tmp_path / "state.duckdb")
    op = WindowOperator(spec)
    op.open(state)
    op.add(batch([(1, 0, 0.1), (2, 0, 0.2)]), ingest_time=0)
    assert op.close() is None  # watermark 2 < 10
    op.commit()
    op.add(batch([(4, 0, 0.3)], first_id=2), ingest_time=0)
    op.close()
    op.commit()  # a crash after this commit replays id 2 (not acked yet)
    op.close_state()
    again = WindowOperator(spec)
    again.open(state)
    assert again.open_rows() == 3
    again.add(batch([(4, 0, 0.3), (11, 0, 0.4)], first_id=2), ingest_time=0)  # m2 replayed, m3 new
    assert collect(again.close()) == [(0, 10, 0, 3, [0, 1, 2])]
    again.close_state()


def test_an_uncommitted_batch_is_rolled_back_with_the_state(tmp_path: Path) -> None:
    spec = window(kind="fixed", size="10s")
    state = str(tmp_path / "state.duckdb")
    op = WindowOperator(spec)
    op.open(state)
    op.add(batch([(1, 0, 0.1)]), ingest_time=0)
    op.commit()
    op.add(batch([(2, 0, 0.1)], first_id=1), ingest_time=0)  # killed before commit
    op.close_state()
    again = WindowOperator(spec)
    again.open(state)
    again.add(batch([(2, 0, 0.1), (20, 0, 0.1)], first_id=1), ingest_time=0)
    assert collect(again.close()) == [(0, 10, 0, 2, [0, 1])]
    again.close_state()


def test_a_state_file_of_another_window_is_refused(tmp_path: Path) -> None:
    state = str(tmp_path / "state.duckdb")
    op = WindowOperator(window(kind="fixed", size="10s"))
    op.open(state)
    op.close_state()
    other = WindowOperator(window(kind="fixed", size="20s"), origin="s.yaml")
    with pytest.raises(
        WindowError, match=r"^s\.yaml: window\.state .* holds windows of another window: spec"
    ):
        other.open(state)


def test_a_bad_aggregate_is_named() -> None:
    op = WindowOperator(
        window(kind="fixed", size="10s", aggregates={"n": "count(*)", "top": "max(colour)"}), origin="s.yaml"
    )
    op.open(None)
    op.add(batch(EVENTS[:2]), ingest_time=0)
    with pytest.raises(WindowError, match=r"^s\.yaml: window\.aggregates\.top: 'max\(colour\)': .*colour"):
        op.close(final=True)


def test_the_issues_fraud_rate_averages_a_condition() -> None:
    # The issue's own example: DuckDB has no avg(BOOLEAN); the condition is cast to INTEGER.
    # A BOOLEAN column given to sum() is counted the same way.
    aggregates = {"fraud_rate": "avg(prediction = 1)", "flagged": "sum(flag)", "n": "count(*)"}
    op = WindowOperator(window(kind="fixed", size="10s", group_by=[], aggregates=aggregates))
    op.open(None)
    rows = pa.RecordBatch.from_pydict(
        {
            "key": ["a", "b", "c", "d", "e"],
            "t": [1.0, 2.0, 3.0, 4.0, 12.0],
            "prediction": [1, 0, 1, 1, 0],
            "flag": [True, False, False, True, True],
        }
    )
    op.add(rows, ingest_time=0)
    closed = op.close(final=True)
    assert closed is not None
    got = [(r["fraud_rate"], r["flagged"], r["n"]) for r in closed.to_pylist()]
    assert got == [(0.75, 2, 4), (0.0, 1, 1)]


def test_an_unreadable_time_is_named() -> None:
    op = WindowOperator(window(kind="fixed", size="10s"), origin="s.yaml")
    op.open(None)
    bad = pa.RecordBatch.from_pydict({"key": ["a"], "id": [0], "t": ["yesterday"], "cls": [0]})
    with pytest.raises(WindowError, match=r"^s\.yaml: window\.time: row a: 'yesterday' is not a time"):
        op.add(bad, ingest_time=0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "hopping", "size": "1s"}, "unknown window kind 'hopping'"),
        ({"kind": "sliding", "size": "10s"}, "a sliding window needs every:"),
        ({"kind": "session", "size": "10s", "gap": "1s"}, "a session window takes gap:"),
        ({"kind": "fixed", "size": "ten"}, "size: expected a duration such as 60s"),
        ({"kind": "sliding", "size": "10s", "every": "20s"}, "every: 20s is longer than size: 10s"),
        ({"kind": "session", "gap": "5s", "emit": "every 1s"}, "early results are for fixed and sliding"),
    ],
)
def test_window_spec_errors(raw: dict[str, Any], message: str) -> None:
    spec = {
        "source": {"kind": "csv", "path": "x.csv"},
        "sink": {"kind": "jsonl", "path": "o.jsonl"},
        "window": {**raw, "aggregates": {"n": "count(*)"}, "sink": {"kind": "jsonl", "path": "w.jsonl"}},
    }
    with pytest.raises(SpecError, match=f"^s.yaml: window: .*{message}"):
        parse_spec(spec, origin="s.yaml")


def test_early_results_share_the_key_of_the_final_row() -> None:
    op = WindowOperator(window(kind="fixed", size="10s", emit="every 1s"))
    op.open(None)
    op.add(batch([(1, 0, 0.1), (2, 0, 0.2)]), ingest_time=0)
    early = op.early()
    assert early is not None and collect(early) == [(0, 10, 0, 2, [0, 1])]
    op.add(batch([(3, 0, 0.3), (30, 1, 0.1)], first_id=2), ingest_time=0)
    final = op.close()
    assert final is not None and collect(final) == [(0, 10, 0, 3, [0, 1, 2])]
    assert final.column("key").to_pylist() == early.column("key").to_pylist()
    assert collect(op.early()) == [(30, 40, 1, 1, [3])]  # only the window still open
    op.close_state()


def test_rows_are_placed_on_ingest_time_without_time() -> None:
    spec = window(kind="fixed", size="1m", time=None)
    op = WindowOperator(spec)
    op.open(None)
    op.add(batch([(1, 0, 0.1)]), ingest_time=125.5)
    op.add(batch([(1, 0, 0.1)], first_id=1), ingest_time=190.0)
    assert collect(op.close()) == [(120, 180, 0, 1, [0])]
    op.close_state()


def test_a_missing_group_column_is_named() -> None:
    op = WindowOperator(window(kind="fixed", size="10s", group_by=["label"]), origin="s.yaml")
    op.open(None)
    with pytest.raises(
        WindowError, match=r"^s\.yaml: window\.group_by: column 'label' not found .*columns: key, id"
    ):
        op.add(batch(EVENTS[:1]), ingest_time=0)


def test_a_state_file_held_by_another_process_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    state = tmp_path / "state.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(state)!r}); "
            "print('ok', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        op = WindowOperator(window(kind="fixed", size="10s"), origin="s.yaml")
        with pytest.raises(
            WindowError,
            match=r"^s\.yaml: window\.state .*state\.duckdb is in use by another process; one process",
        ):
            op.open(str(state))
    finally:
        holder.communicate(input="", timeout=30)
