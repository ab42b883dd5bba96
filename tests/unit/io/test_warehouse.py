"""Turns at the warehouse file: readers and writers in one process, as other processes would."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from inferline.errors import SinkError
from inferline.io import warehouse_writer
from inferline.io.duckdb import DuckDBSink, TableSource
from inferline.io.warehouse import Session, Turn, WarehouseError, connect, query


def _batch(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch(
        {"key": [f"k{i}" for i in range(start, start + n)], "x": list(range(start, start + n))}
    )


def test_a_reader_sees_every_commit_while_the_sink_stays_open(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    sink = DuckDBSink(path, "t")
    sink.open()
    try:
        seen = []
        for i in range(3):
            sink.write(_batch(i * 10, 10))
            sink.commit()
            # The sink still holds its turn (no one waited); the reader waits at the gate,
            # the writer's watcher hands the file over.
            seen.append(query(path, "SELECT count(*) AS n FROM t").column("n")[0].as_py())
        sink.write(_batch(30, 10))
        sink.commit()
    finally:
        sink.close()
    assert seen == [10, 20, 30]
    assert query(path, "SELECT count(*) AS n FROM t").column("n")[0].as_py() == 40


def test_an_uncommitted_batch_is_never_seen_and_the_reader_waits_for_the_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    sink = DuckDBSink(path, "t")
    sink.open()
    sink.write(_batch(0, 5))
    sink.commit()
    sink.write(_batch(5, 5))  # inside a transaction: the turn is not given up
    counts: list[int] = []
    reader = threading.Thread(
        target=lambda: counts.append(query(path, "SELECT count(*) AS n FROM t").column("n")[0].as_py())
    )
    reader.start()
    reader.join(timeout=0.3)
    assert reader.is_alive() and counts == []  # waiting for the commit, not failing
    sink.commit()
    reader.join(timeout=30)
    sink.close()
    assert counts == [10]


def test_sinks_of_one_process_share_a_writer_and_its_turns(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    results, errors = DuckDBSink(path, "t"), DuckDBSink(path, "t_errors")
    results.open()
    errors.open()
    try:
        assert results._writer is errors._writer
        errors.write(_batch(0, 2))
        results.write(_batch(0, 7))
        results.commit()
        errors.commit()
    finally:
        results.close()
        errors.close()
    assert warehouse_writer._writers == {}
    with connect(path) as con:
        assert con.sql("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM t_errors)").fetchall() == [
            (7, 2)
        ]


def test_an_idle_writer_gives_the_file_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warehouse_writer, "IDLE_S", 0.05)
    path = str(tmp_path / "w.duckdb")
    sink = DuckDBSink(path, "t")
    sink.open()
    sink.write(_batch(0, 3))
    sink.commit()
    turn = Turn(path)
    try:
        # No one waits at the gate: the lock comes free only because the writer went idle.
        for _ in range(3000):
            if turn.lock.try_acquire():
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError("the idle writer kept the file")
        turn.lock.release()
    finally:
        turn.close()
        sink.close()


def test_a_long_wait_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "w.duckdb")
    with connect(path, read_only=False) as con:
        con.sql("CREATE TABLE t (x INTEGER)")
    caplog.set_level(logging.WARNING, logger="inferline.warehouse")
    done = threading.Event()

    def write() -> None:
        with connect(path, read_only=False) as con:
            con.sql("INSERT INTO t VALUES (1)")
        done.set()

    with connect(path):  # a reader holds the file
        writer = threading.Thread(target=write)
        writer.start()
        for _ in range(3000):
            if caplog.records:
                break
            threading.Event().wait(0.01)
        assert not done.is_set()
    writer.join(timeout=30)
    assert done.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"waiting for {path}: another process is using it; this command resumes when it is free"
    ]


def test_a_run_cannot_write_the_file_its_table_source_reads(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    with connect(path, read_only=False) as con:
        con.sql("CREATE TABLE flowers AS SELECT 'k' || i AS key, i AS x FROM range(3) r(i)")
    source = TableSource(path, "flowers")
    source.open()
    sink = DuckDBSink(path, "out")
    try:
        message = (
            f"{path}: this run reads it (source kind table) and cannot also write it until the run "
            "ends; write the results to another DuckDB file"
        )
        with pytest.raises(SinkError, match="^" + re.escape(message) + "$"):
            sink.open()
    finally:
        sink.close()
        source.close()


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("hello\n" * 100)
    with pytest.raises(WarehouseError, match=rf"^{re.escape(str(path))}: cannot open DuckDB database \("):
        Session(str(path)).open()
    with pytest.raises(WarehouseError, match=r"^.*missing.duckdb: DuckDB database not found$"):
        Session(str(tmp_path / "missing.duckdb")).open()


def test_short_sessions_of_a_thread_reuse_one_duckdb_and_a_nested_one_gets_its_own(tmp_path: Path) -> None:
    from inferline.io import warehouse

    db = str(tmp_path / "w.duckdb")
    with duckdb.connect(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    with connect(db) as outer:
        with connect(db) as inner:  # the file is attached in outer's instance: a new one
            assert inner.sql("SELECT count(*) FROM t").fetchall() == [(1,)]
        assert outer.sql("SELECT count(*) FROM t").fetchall() == [(1,)]
    idle = warehouse._idle.con
    assert idle is not None
    for _ in range(2):
        with connect(db) as con:
            assert warehouse._idle.con is None  # in use
            assert con.sql("SELECT x FROM t").fetchall() == [(1,)]
        assert warehouse._idle.con is idle
    with pytest.raises(duckdb.Error):
        con.sql("SELECT 1")  # the cursor handed out is closed with its turn
