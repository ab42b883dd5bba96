"""`inferline.sql.connect` on a warehouse file: which scripts open it read-only, and USE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import inferline.sql
from inferline.errors import SqlError
from inferline.io.warehouse import connect as warehouse_connect
from inferline.sql.connect import reads_only
from tests.conftest import subprocess_env


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


def test_connecting_imports_no_scikit_learn() -> None:
    # Every `inferline sql` process pays for what connecting imports: scikit-learn (through the
    # trained models' module) cost ~1.3 s CPU of 2.3 s for a query that trains nothing.
    code = "import sys, inferline.sql.connect; print([m for m in ('sklearn', 'torch') if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
