"""Closing windows from the partials in memory with Arrow: the rows the query gives."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pyarrow as pa
import pytest

from inferline.engine import window_pane_close
from inferline.engine.window_pane_close import ArrowClose
from inferline.engine.windows import WindowOperator
from inferline.pipeline import WindowSpec
from tests.unit.engine.test_windows import EVENTS

PLAIN = {"n": "count(*)", "mean": "avg(score)", "top": "max(score)", "scored": "count(score)"}


def window(**raw: Any) -> WindowSpec:
    base: dict[str, Any] = {"time": "t", "group_by": ["cls"], "aggregates": PLAIN}
    return WindowSpec.model_validate({**base, **raw, "sink": {"kind": "jsonl", "path": "w.jsonl"}})


class Counted:
    """ArrowClose.windows, counting its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = ArrowClose.windows

        def counted(close: ArrowClose, panes: pa.Table, **extent: int) -> pa.Table:
            self.calls += 1
            return real(close, panes, **extent)

        monkeypatch.setattr(window_pane_close.ArrowClose, "windows", counted)


def closes(
    spec: WindowSpec, parts: list[pa.RecordBatch], *, query_only: bool = False
) -> list[dict[str, Any]]:
    op = WindowOperator(spec)
    op.open(None)
    if query_only:
        op._closes = False  # every close by the query: the reference
    rows: list[dict[str, Any]] = []
    for part in parts:
        op.add(part, ingest_time=0)
        rows += [r for t in [op.close()] if t is not None for r in t.to_pylist()]
    rows += [r for t in [op.close(final=True)] if t is not None for r in t.to_pylist()]
    op.close_state()
    return rows


def test_hand_computed_sliding_windows_closed_by_arrow(monkeypatch: pytest.MonkeyPatch) -> None:
    # size 20 every 10, lateness 5 s, one row a batch. (t, class, score):
    # t=3 comes at max 25 (watermark 20): its windows [-10,10) and [0,20) closed -> late.
    # t=14 comes at max 31 (watermark 26): only [10,30) is still open -> counted there only.
    events: list[tuple[int, int, float | None]] = [*EVENTS[:-1], (14, 1, None)]  # test_windows' events
    schema = pa.schema({"key": pa.string(), "t": pa.float64(), "cls": pa.int64(), "score": pa.float64()})
    parts = [
        pa.RecordBatch.from_pydict({"key": [f"m{i}"], "t": [float(t)], "cls": [c], "score": [s]}, schema)
        for i, (t, c, s) in enumerate(events)
    ]
    counted = Counted(monkeypatch)
    got = closes(window(kind="sliding", size="20s", every="10s", allowed_lateness="5s"), parts)
    # t=25 closes the windows ending at 10 and 20 (by the query, and by Arrow to compare the
    # types); the end of the input closes the rest by Arrow alone.
    assert counted.calls == 2
    epoch = datetime.datetime(1970, 1, 1)
    table = [
        (int((r["window_start"] - epoch).total_seconds()), r["cls"], r["n"], r["mean"], r["top"], r["scored"])
        for r in got
    ]
    assert table == [
        (-10, 0, 1, pytest.approx(0.1), 0.1, 1),
        (-10, 1, 2, pytest.approx(0.85), 0.9, 2),
        (0, 0, 2, pytest.approx(0.15), 0.2, 2),
        (0, 1, 2, pytest.approx(0.85), 0.9, 2),
        (10, 0, 2, pytest.approx(0.25), 0.3, 2),
        (10, 1, 1, None, None, 0),  # t=14 without a score: counted, no mean
        (20, 0, 1, pytest.approx(0.3), 0.3, 1),
        (20, 1, 1, pytest.approx(0.7), 0.7, 1),
        (30, 1, 1, pytest.approx(0.7), 0.7, 1),
    ]
    assert [r["key"] for r in got][:2] == ["-10000000|10000000|0", "-10000000|10000000|1"]


def events(seed: int, count: int, groups: list[Any]) -> list[pa.RecordBatch]:
    """Rows 0.1 s apart, shuffled by up to 4 s, one in 20 up to 30 s late, in random batches."""
    rng = random.Random(seed)
    rows = [
        {
            "key": f"m{i}",
            "t": i * 0.1 + rng.uniform(0, 4) - (rng.uniform(5, 30) if rng.random() < 0.05 else 0.0),
            "cls": rng.choice(groups),
            "score": None if rng.random() < 0.1 else rng.random(),
        }
        for i in range(count)
    ]
    parts, start = [], 0
    while start < count:
        size = rng.choice([1, 9, 60])
        parts.append(pa.RecordBatch.from_pylist(rows[start : start + size]))
        start += size
    return parts


@pytest.mark.parametrize(
    ("extent", "groups", "seed"),
    [
        ({"kind": "sliding", "size": "20s", "every": "5s", "allowed_lateness": "6s"}, [0, 1, 2, None], 1),
        ({"kind": "sliding", "size": "25s", "every": "10s", "allowed_lateness": "2s"}, ["a", "b", None], 2),
        ({"kind": "fixed", "size": "10s", "allowed_lateness": "3s"}, ["x", "y"], 3),
    ],
)
def test_arrow_closes_give_the_rows_of_the_query(
    monkeypatch: pytest.MonkeyPatch, extent: dict[str, str], groups: list[Any], seed: int
) -> None:
    parts = events(seed, 500, groups)
    counted = Counted(monkeypatch)
    fast = closes(window(**extent), parts)
    assert counted.calls > 5
    calls = counted.calls
    slow = closes(window(**extent), parts, query_only=True)
    assert counted.calls == calls and len(fast) == len(slow) >= 12
    for got, want in zip(fast, slow, strict=True):
        assert list(got) == list(want)  # same columns, same order
        exact = {c: v for c, v in got.items() if not isinstance(v, float)}
        assert exact == {c: want[c] for c in exact}, (got, want)
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)


def test_a_float_group_column_is_closed_by_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    # DuckDB writes 1.0 as '1.0' in a key, Arrow as '1': such keys come from the query only.
    parts = [
        pa.RecordBatch.from_pydict(
            {"key": ["a", "b"], "t": [1.0, 2.0], "cls": [1.0, 2.5], "score": [0.5, 0.25]}
        ),
        pa.RecordBatch.from_pydict(
            {"key": ["c", "d"], "t": [12.0, 25.0], "cls": [1.0, 1.0], "score": [1.0, 0.0]}
        ),
    ]
    counted = Counted(monkeypatch)
    got = closes(window(kind="fixed", size="10s"), parts)
    assert counted.calls == 0
    assert [(r["key"], r["n"], r["mean"]) for r in got] == [
        ("0|10000000|1.0", 1, 0.5),
        ("0|10000000|2.5", 1, 0.25),
        ("10000000|20000000|1.0", 1, 1.0),
        ("20000000|30000000|1.0", 1, 0.0),
    ]
