"""Pane partial aggregates: the same windows as the rows give, on random out-of-order data."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from inferline.engine import window_panes
from inferline.engine.window_pane_state import PaneState
from inferline.engine.window_panes import pane_plan
from inferline.engine.windows import WindowOperator
from inferline.errors import WindowError
from inferline.pipeline import WindowSpec

AGGREGATES = {
    "n": "count(*)",
    "mean": "avg(score)",
    "scored": "count(score)",
    "total": "sum(v)",
    "low": "min(score)",
    "high": "max(v)",
    "rate": "avg(cls = 1)",
    "flagged": "count_if(flag)",
    "mixed": "round(avg(score), 3) + max(v) - min(v)",
}
# Plain columns only: Arrow's group_by makes the partials, no query.
PLAIN = {
    "n": "count(*)",
    "mean": "avg(score)",
    "scored": "count(score)",
    "low": "min(score)",
    "high": "max(v)",
}


def test_decomposable_aggregates_get_a_plan_and_the_others_none() -> None:
    plan = pane_plan({"n": "count(*)", "rate": "avg(cls = 1) * 100"}, group_by=["cls"])
    assert plan is not None
    assert plan.partials == {"__p0": "COUNT(*)", "__p1": "SUM(cls = 1)", "__p2": "COUNT(cls = 1)"}
    assert plan.finals["rate"] == "CAST(SUM(__p1) AS DOUBLE) / NULLIF(CAST(SUM(__p2) AS BIGINT), 0) * 100"
    for needs_rows in [
        "list(id)",
        "quantile(score, 0.95)",
        "count(DISTINCT cls)",
        "sum(v) FILTER (WHERE flag)",
        "max(v, 3)",
        "mean(v)",  # an unknown function may be an aggregate
        "count(*) + v",  # v is not a group column
        "v",
        "sum(",
    ]:
        assert pane_plan({"n": "count(*)", "x": needs_rows}, group_by=["cls"]) is None, needs_rows


SCHEMA = pa.schema(
    {"key": pa.string(), "id": pa.int64(), "t": pa.float64(), "cls": pa.int64()}
    | {"score": pa.float64(), "v": pa.int32(), "flag": pa.bool_()}
)


def test_plain_calls_skip_the_parser_with_the_same_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    aggregates = {"n": "count(*)", "c": "COUNT(score)", "m": "avg(score)", "s": "sum(v)", "hi": "max( v )"}
    aggregates |= {"lo": "min(v)", "f": "count_if(flag)"}
    fast = pane_plan(aggregates, group_by=["cls"])
    monkeypatch.setattr(window_panes, "simple_call", lambda expression: None)
    assert pane_plan(aggregates, group_by=["cls"]) == fast is not None


def events(seed: int, count: int) -> list[dict[str, Any]]:
    """Rows 0.1 s apart, shuffled by up to 4 s; one in 25 comes 15-40 s late."""
    rng = random.Random(seed)
    made = []
    for i in range(count):
        t = i * 0.1 + rng.uniform(0, 4) + (-rng.uniform(15, 40) if rng.random() < 0.04 else 0.0)
        made.append(
            {
                "key": f"m{i}",
                "id": i,
                "t": round(t, 3),
                "cls": rng.randrange(3),
                "score": None if rng.random() < 0.1 else rng.random(),
                "v": rng.randrange(-50, 100),
                "flag": rng.random() < 0.3,
            }
        )
    return made


def window(kind: str, aggregates: dict[str, str], **extent: str) -> WindowSpec:
    raw = {"kind": kind, "time": "t", "group_by": ["cls"], "aggregates": aggregates, **extent}
    return WindowSpec.model_validate({**raw, "sink": {"kind": "jsonl", "path": "w.jsonl"}})


def batches(rows: list[dict[str, Any]], seed: int) -> list[pa.RecordBatch]:
    rng = random.Random(seed)
    out, start = [], 0
    while start < len(rows):
        size = rng.choice([1, 7, 40, 150])
        out.append(pa.RecordBatch.from_pylist(rows[start : start + size], schema=SCHEMA))
        start += size
    return out


def test_plain_columns_are_reduced_by_arrow_and_expressions_by_a_query() -> None:
    con = duckdb.connect()
    part = pa.Table.from_batches(batches(events(0, 50), 0))
    placed = part.append_column("__first", pa.array([0] * 50)).append_column("__last", pa.array([10] * 50))
    plain = PaneState.choose(con, placed, PLAIN, group_by=["cls"], origin="s")
    assert plain is not None and plain.arrow is True
    mixed = PaneState.choose(con, placed, AGGREGATES, group_by=["cls"], origin="s")
    assert mixed is not None and mixed.arrow is False  # avg(cls = 1), sum of integers
    assert PaneState.choose(con, placed, {"ids": "list(id)"}, group_by=["cls"], origin="s") is None
    con.close()


def run(spec: WindowSpec, parts: list[pa.RecordBatch]) -> tuple[list[dict[str, Any]], list[str], int]:
    op = WindowOperator(spec)
    op.open(None)
    closed: list[pa.Table] = []
    late: list[str] = []
    most = 0
    for part in parts:
        late += [d.key for d in op.add(part, ingest_time=0)]
        closed += [t for t in [op.close()] if t is not None]
        most = max(most, op.open_rows())
    closed += [t for t in [op.close(final=True)] if t is not None]
    op.close_state()
    rows = [r for table in closed for r in table.to_pylist()]
    return sorted(rows, key=lambda r: r["key"]), late, most


@pytest.mark.parametrize(
    ("kind", "extent", "aggregates", "seed"),
    [
        ("sliding", {"size": "20s", "every": "5s", "allowed_lateness": "3s"}, AGGREGATES, 1),
        ("sliding", {"size": "25s", "every": "10s", "allowed_lateness": "8s"}, AGGREGATES, 2),  # panes of 5 s
        ("fixed", {"size": "10s", "allowed_lateness": "2s"}, AGGREGATES, 3),
        ("sliding", {"size": "20s", "every": "5s", "allowed_lateness": "3s"}, PLAIN, 4),
    ],
)
def test_panes_give_the_windows_the_rows_give(
    kind: str, extent: dict[str, str], aggregates: dict[str, str], seed: int
) -> None:
    parts = batches(events(seed, 600), seed)
    by_panes, late_panes, panes_held = run(window(kind, aggregates, **extent), parts)
    # With one aggregate that needs its rows, the window keeps the rows: the reference.
    rows = {**aggregates, "ids": "list(id ORDER BY id)"}
    by_rows, late_rows, rows_held = run(window(kind, rows, **extent), parts)
    assert late_panes == late_rows and late_rows  # some rows were too late for every window
    assert len(by_panes) == len(by_rows) > 20
    for got, want in zip(by_panes, by_rows, strict=True):
        exact = {c: got[c] == want[c] for c in ["key", *aggregates] if not isinstance(got[c], float)}
        assert all(exact.values()), (got, want)
        close = {c: got[c] for c in aggregates if isinstance(got[c], float)}
        assert close == pytest.approx({c: want[c] for c in close}, rel=1e-12, abs=1e-12)
    assert panes_held < rows_held / 5  # partial rows per pane and group, not the rows


@pytest.mark.parametrize("aggregates", [AGGREGATES, PLAIN])
def test_panes_survive_a_restart_without_double_counting(tmp_path: Path, aggregates: dict[str, str]) -> None:
    # Batch 3 is committed to the state but its messages are not acked when the process
    # dies: it comes again (with batch 4) and is not counted twice. Batch 5 is added but
    # not committed: the state rolls back and counts it once when it comes again.
    spec = window("sliding", aggregates, size="20s", every="5s", allowed_lateness="3s")
    parts = batches(events(7, 600), 7)
    reference, late, _ = run(spec, parts)
    state = str(tmp_path / "state.duckdb")
    op = WindowOperator(spec)
    op.open(state)
    closed: list[pa.Table] = []
    seen: list[str] = []

    def feed(operator: WindowOperator, part: pa.RecordBatch, *, commit: bool = True) -> None:
        seen.extend(d.key for d in operator.add(part, ingest_time=0))
        table = operator.close()
        if commit:
            closed.extend([table] if table is not None else [])
            operator.commit()

    for part in parts[:4]:
        feed(op, part)
    feed(op, parts[4], commit=False)
    op.close_state()  # killed
    again = WindowOperator(spec)
    again.open(state)
    assert 0 < again.open_rows() < 40
    for part in parts[3:]:
        feed(again, part)
    closed.extend([t for t in [again.close(final=True)] if t is not None])
    again.close_state()
    rows = sorted((r for table in closed for r in table.to_pylist()), key=lambda r: r["key"])
    assert [r["key"] for r in rows] == [r["key"] for r in reference]
    assert [r["n"] for r in rows] == [r["n"] for r in reference]
    assert [r["mean"] for r in rows] == pytest.approx([r["mean"] for r in reference], rel=1e-12)
    assert sorted(set(seen)) == sorted(late)


def test_a_state_file_whose_panes_cannot_be_read_is_named(tmp_path: Path) -> None:
    state = str(tmp_path / "state.duckdb")
    spec = window("fixed", PLAIN, size="10s")
    op = WindowOperator(spec)
    op.open(state)
    op.add(batches(events(5, 20), 5)[0], ingest_time=0)
    op.commit()
    op.close_state()
    with duckdb.connect(state) as con:
        con.execute("DROP TABLE window_pane_keys")
    with pytest.raises(
        WindowError, match=r"^s\.yaml: window\.state: its panes cannot be read \(.*\); delete"
    ):
        WindowOperator(spec, origin="s.yaml").open(state)
