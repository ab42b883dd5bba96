"""read_windowed: a window sink's table as lines per group, for the report and the dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from inferline.errors import InputError
from inferline.io import windowed
from inferline.io.windowed import read_windowed
from inferline.report.data import load_report

BASE = 1_796_083_200  # 2026-12-01T00:00:00Z


def table(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[int, str | None, int, float]]) -> None:
    """A table shaped as the window sink writes it: key, window_start, window_end, groups, aggregates."""
    con.execute(
        "CREATE TABLE w (key VARCHAR, window_start TIMESTAMP, window_end TIMESTAMP, merchant VARCHAR, "
        "n BIGINT, rate DOUBLE, ids BIGINT[], note VARCHAR)"
    )
    for second, merchant, n, rate in rows:
        start, end = (BASE + second) * 10**6, (BASE + second + 10) * 10**6
        con.execute(
            "INSERT INTO w VALUES (?, make_timestamp(?), make_timestamp(?), ?, ?, ?, [1, 2], 'x')",
            [f"{start}|{end}|{merchant or ''}", start, end, merchant, n, rate],
        )


def test_groups_come_from_the_key_and_numeric_aggregates_are_charted() -> None:
    con = duckdb.connect()
    table(con, [(0, "a", 2, 0.5), (10, "a", 1, 1.0), (0, "b", 1, 0.0), (20, None, 3, 0.25)])
    found = read_windowed(con, "w", "w")
    assert found is not None
    assert (found.groups, found.aggregates, found.windows) == (["merchant"], ["n", "rate"], 4)
    lines = {(s.aggregate, s.group): s.points for s in found.series}
    assert lines == {
        ("n", "(null)"): [(BASE + 20.0, 3.0)],
        ("n", "a"): [(BASE + 0.0, 2.0), (BASE + 10.0, 1.0)],
        ("n", "b"): [(BASE + 0.0, 1.0)],
        ("rate", "(null)"): [(BASE + 20.0, 0.25)],
        ("rate", "a"): [(BASE + 0.0, 0.5), (BASE + 10.0, 1.0)],
        ("rate", "b"): [(BASE + 0.0, 0.0)],
    }
    latest = read_windowed(con, "w", "w", last=1)
    assert latest is not None and {s.points[0][0] for s in latest.series} == {BASE + 20.0}


def test_a_table_without_windows_is_not_windowed_and_many_groups_are_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE p AS SELECT 1 AS prediction")
    assert read_windowed(con, "p", "p") is None
    table(con, [(0, g, 1, 1.0) for g in "abcd"] + [(10, "a", 1, 1.0)])
    monkeypatch.setattr(windowed, "MAX_GROUPS", 2)
    found = read_windowed(con, "w", "w")
    assert found is not None and found.groups_left_out == 2
    assert sorted({s.group for s in found.series}) == ["a", "b"]  # most windows first, then by name


def test_label_or_compare_on_a_windowed_table_is_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "w.duckdb")
    with duckdb.connect(db) as con:
        table(con, [(0, "a", 2, 0.5)])
    assert load_report("w", db=db).windows is not None
    with pytest.raises(
        InputError, match=r"^report: .*w\.duckdb table w: is a windowed table .*--compare is for"
    ):
        load_report("w", db=db, compare="other")
