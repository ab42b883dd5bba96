"""The dashboard's warehouse panel: counts per table, read at most once a second, errors as text."""

from __future__ import annotations

from pathlib import Path

from inferline.io.warehouse import Turn, connect
from inferline.serve.warehouse import WarehouseCounts


def test_counts_per_table_are_reread_only_after_a_second(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    with connect(path, read_only=False) as con:
        con.sql("CREATE SCHEMA ds; CREATE TABLE ds.b AS SELECT range AS x FROM range(2)")
        con.sql("CREATE TABLE a AS SELECT range AS x FROM range(3)")
    now = [100.0]
    counts = WarehouseCounts(path, clock=lambda: now[0])
    assert counts.snapshot() == {
        "path": path,
        "tables": [{"name": "ds.b", "rows": 2}, {"name": "a", "rows": 3}],
        "error": None,
    }
    with connect(path, read_only=False) as con:
        con.sql("INSERT INTO a VALUES (7)")
    now[0] += 0.5
    assert counts.snapshot()["tables"][1]["rows"] == 3 and counts.reads == 1
    now[0] += 0.5
    assert counts.snapshot()["tables"][1]["rows"] == 4 and counts.reads == 2


def test_a_missing_file_or_a_turn_that_does_not_come_is_an_error_line(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    assert WarehouseCounts(path).snapshot() == {"path": path, "tables": [], "error": "not created yet"}
    with connect(path, read_only=False) as con:
        con.sql("CREATE TABLE a (x INTEGER)")
    writer = Turn(path)
    writer.take(write=True, what="a test writer")  # holds the lock: no reader's turn comes
    try:
        snapshot = WarehouseCounts(path, timeout_s=0.2).snapshot()
    finally:
        writer.close()
    assert snapshot["tables"] == []
    assert snapshot["error"] == f"{path}: another process is using it; gave up after 0.2 s"
