"""Pane partials in memory and in the state file: one row per batch, read back at a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from inferline.engine.window_pane_state import unpack
from inferline.engine.windows import WindowOperator
from inferline.pipeline import WindowSpec

SPEC = WindowSpec.model_validate(
    {
        "kind": "sliding",
        "size": "10s",
        "every": "5s",
        "time": "t",
        "group_by": ["cls"],
        "aggregates": {"n": "count(*)", "mean": "avg(score)"},
        "sink": {"kind": "jsonl", "path": "w.jsonl"},
    }
)


def part(first: int, times: list[float]) -> pa.RecordBatch:
    ids = range(first, first + len(times))
    return pa.RecordBatch.from_pydict(
        {
            "key": [f"m{i}" for i in ids],
            "t": times,
            "cls": [i % 2 for i in ids],
            "score": [i / 10 for i in ids],
        }
    )


# Out of order within and across batches (lateness 0): t=4 comes at watermark 7, after the end
# of [-5, 5): it counts in [0, 10) only. t=0.5 comes after [0, 10) closed: late.
PARTS = [part(0, [1.0, 3.0, 2.0]), part(3, [7.0, 4.0]), part(5, [11.5, 9.0]), part(7, [0.5, 16.0])]


def closed(op: WindowOperator, *, final: bool = False) -> list[tuple[Any, ...]]:
    table = op.close(final=final)
    rows = [] if table is None else table.to_pylist()
    return [(r["key"], r["n"], round(r["mean"], 9)) for r in rows]


def test_each_batch_is_one_saved_row_and_a_restart_reads_the_panes_back(tmp_path: Path) -> None:
    state = str(tmp_path / "state.duckdb")
    op = WindowOperator(SPEC)
    op.open(state)
    rows = []
    for batch in PARTS[:3]:
        op.add(batch, ingest_time=0)
        rows += closed(op)
        op.commit()
    held = op.open_rows()
    op.close_state()
    with duckdb.connect(state, read_only=True) as con:
        saved = con.execute("SELECT seq, keys, partials FROM window_pane_keys ORDER BY seq").fetchall()
    # Batch 2 (max 7) closed [-5, 5), batch 3 (max 11.5) [0, 10): batch 1's row went with it.
    assert [seq for seq, _, _ in saved] == [2, 3]
    assert sum(t.num_rows for t in unpack([bytes(p) for _, _, p in saved])) >= held
    again = WindowOperator(SPEC)
    again.open(state)
    assert again.open_rows() == held
    assert again.add(PARTS[2], ingest_time=0) == []  # replayed (not acked before the kill): skipped
    assert [d.key for d in again.add(PARTS[3], ingest_time=0)] == ["m7"]
    rows += closed(again) + closed(again, final=True)
    again.close_state()
    # (class = id % 2, score = id / 10) [-5,5): ids 0, 2 | 1. [0,10): 0, 2, 4 | 1, 3.
    # [5,15): 6 | 3, 5 (t=9 came at watermark 11.5: not in [0,10)). [10,20): 8 | 5. [15,25): 8.
    assert rows == [
        ("-5000000|5000000|0", 2, 0.1),
        ("-5000000|5000000|1", 1, 0.1),
        ("0|10000000|0", 3, pytest.approx(0.2)),
        ("0|10000000|1", 2, pytest.approx(0.2)),
        ("5000000|15000000|0", 1, pytest.approx(0.6)),
        ("5000000|15000000|1", 2, pytest.approx(0.4)),
        ("10000000|20000000|0", 1, pytest.approx(0.8)),
        ("10000000|20000000|1", 1, pytest.approx(0.5)),
        ("15000000|25000000|0", 1, pytest.approx(0.8)),
    ]


def test_a_state_file_with_its_panes_in_a_table_of_their_own_is_read(tmp_path: Path) -> None:
    # State files written before the panes moved into memory kept them in `window_panes`.
    state = str(tmp_path / "state.duckdb")
    reference = WindowOperator(SPEC)
    reference.open(None)
    want = []
    for batch in PARTS:
        reference.add(batch, ingest_time=0)
        want += closed(reference)
    want += closed(reference, final=True)
    reference.close_state()
    op = WindowOperator(SPEC)
    op.open(state)
    got = []
    for batch in PARTS[:2]:
        op.add(batch, ingest_time=0)
        got += closed(op)
        op.commit()
    op.close_state()
    with duckdb.connect(state) as con:
        blobs = [bytes(b) for (b,) in con.execute("SELECT partials FROM window_pane_keys").fetchall()]
        con.register("panes", pa.concat_tables(unpack(blobs)))
        con.execute("CREATE TABLE window_panes AS SELECT * FROM panes")
        con.execute("ALTER TABLE window_pane_keys DROP COLUMN partials")
    again = WindowOperator(SPEC)
    again.open(state)
    for batch in PARTS[2:]:
        again.add(batch, ingest_time=0)
        got += closed(again)
    assert got + closed(again, final=True) == want
    again.close_state()
    with duckdb.connect(state, read_only=True) as con:
        names = {n for (n,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "window_panes" not in names
