"""`inferline.sql.connect` on a warehouse file: which scripts open it read-only, and USE."""

from __future__ import annotations

from pathlib import Path

import pytest

import inferline.sql
from inferline.errors import SqlError
from inferline.io.warehouse import connect as warehouse_connect
from inferline.sql.connect import reads_only


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("SELECT 1", True),
        ("-- a comment\nWITH a AS (SELECT 1) SELECT * FROM a", True),
        ("SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT * FROM flowers))", True),
        ("SHOW TABLES; DESCRIBE flowers", True),
        ("SELECT 1; INSERT INTO t VALUES (1)", False),
        ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", False),
        ("CREATE OR REPLACE MODEL ds.iris OPTIONS (model_type = 'onnx', model_path = 'm.onnx')", False),
        ("DROP TABLE t", False),
    ],
)
def test_scripts_that_only_read(script: str, expected: bool) -> None:
    assert reads_only(script) is expected


def test_a_read_only_connection_reads_the_file_and_refuses_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "w.duckdb")
    with warehouse_connect(path, read_only=False) as con:
        con.sql("CREATE TABLE flowers AS SELECT range AS x FROM range(4)")
    with inferline.sql.connect(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM flowers").fetchall() == [(4,)]
        with pytest.raises(SqlError, match="^statement 1: .*read-only"):
            con.run_script("CREATE TABLE t (x INTEGER)")
    with inferline.sql.connect(path) as con:  # read-write: the catalog lands in the file
        con.sql("CREATE TABLE t AS SELECT 1 AS x")
    with warehouse_connect(path) as con:
        assert con.sql("SELECT count(*) FROM t").fetchall() == [(1,)]
