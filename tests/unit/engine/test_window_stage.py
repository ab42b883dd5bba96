"""WindowStage: early results on the injected clock, final rows when a bounded input ends."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from inferline.engine.window_stage import WindowStage
from inferline.pipeline import parse_spec


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def test_early_results_when_due_then_the_final_row_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "windows.jsonl"
    spec = parse_spec(
        {
            "source": {"kind": "jsonl", "path": "in.jsonl"},
            "sink": {"kind": "jsonl", "path": str(tmp_path / "rows.jsonl")},
            "window": {
                "kind": "fixed",
                "size": "1m",
                "time": "t",
                "aggregates": {"n": "count(*)"},
                "emit": "every 5s",
                "sink": {"kind": "jsonl", "path": str(out)},
            },
        }
    )
    clock = Clock()
    stage = WindowStage(spec, stream=False, clock=clock)
    stage.open()
    rows = pa.RecordBatch.from_pydict({"key": ["a", "b"], "t": [1.0, 2.0]})
    assert stage.add(rows) == []
    stage.commit()  # 0 s: no early result due yet
    assert stage.rows_written == 0
    clock.now = 5.0
    stage.commit()
    assert stage.rows_written == 1  # the open window [0, 60) so far: 2 rows
    stage.add(pa.RecordBatch.from_pydict({"key": ["c"], "t": [3.0]}))
    stage.commit()  # the next early result is due at 10 s
    assert stage.rows_written == 1
    stage.finish(ok=True, bounded=True)
    assert stage.sink is not None
    stage.sink.close()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(w["key"], w["n"]) for w in written] == [("0|60000000", 2), ("0|60000000", 3)]
    assert clock.calls >= 3
