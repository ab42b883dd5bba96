"""Object tables (CREATE EXTERNAL TABLE ... object_metadata='SIMPLE') and external file tables."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
import pytest

import inferline.sql
from inferline.sql import SqlConnection


def _files(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    contents = {"a.png": b"\x89PNG fake", "b.txt": b"hello", "c.bin": b"\x00\x01"}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return contents


def test_object_table_has_bigquery_columns(tmp_path: Path) -> None:
    contents = _files(tmp_path / "bucket")
    with inferline.sql.connect(str(tmp_path / "w.duckdb")) as con:
        con.sql(
            "CREATE OR REPLACE EXTERNAL TABLE ds.objects WITH CONNECTION `us.my-conn` "
            f"OPTIONS(uris=['{tmp_path}/bucket/*.png', '{tmp_path}/bucket/*.txt'], object_metadata='SIMPLE')"
        )
        table = con.fetch(con.run_script("SELECT * FROM ds.objects ORDER BY uri"))
    assert table is not None
    assert table.column_names == [
        "uri",
        "generation",
        "content_type",
        "size",
        "md5_hash",
        "updated",
        "metadata",
        "data",
    ]
    rows = table.to_pylist()
    assert [r["uri"] for r in rows] == [f"{tmp_path}/bucket/a.png", f"{tmp_path}/bucket/b.txt"]
    assert [r["content_type"] for r in rows] == ["image/png", "text/plain"]
    assert rows[1]["size"] == 5 and rows[1]["data"] == contents["b.txt"]
    assert rows[1]["md5_hash"] == hashlib.md5(b"hello").hexdigest()
    assert rows[0]["metadata"] == [] and rows[0]["generation"] > 0


def test_data_is_read_only_when_selected(tmp_path: Path) -> None:
    _files(tmp_path / "bucket")
    with inferline.sql.connect() as con:
        con.sql(f"CREATE EXTERNAL TABLE ds.o OPTIONS(uris=['{tmp_path}/bucket/*'], object_metadata='SIMPLE')")
        plan = con.raw.sql("EXPLAIN SELECT uri, size FROM ds.o").fetchall()[0][1]
        assert "content" not in plan
        plan = con.raw.sql("EXPLAIN SELECT uri, data FROM ds.o").fetchall()[0][1]
        assert "content" in plan


def test_relative_uris_are_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _files(tmp_path / "bucket")
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "w.duckdb")
    with inferline.sql.connect(db) as con:
        con.sql("CREATE EXTERNAL TABLE ds.o OPTIONS(uris=['bucket/*.txt'], object_metadata='SIMPLE')")
    monkeypatch.chdir("/")
    with inferline.sql.connect(db) as con:
        table = con.fetch(con.run_script("SELECT uri FROM ds.o"))
    assert table is not None and table.column("uri").to_pylist() == [f"{tmp_path}/bucket/b.txt"]


def test_fsspec_uris_are_registered_again_on_connect(tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/inferline-test/x1.png", b"one")
    memory.pipe("/inferline-test/x2.png", b"three")
    db = str(tmp_path / "w.duckdb")
    try:
        with inferline.sql.connect(db) as con:
            con.sql(
                "CREATE EXTERNAL TABLE ds.mem OPTIONS(uris=['memory://inferline-test/*.png'], "
                "object_metadata='SIMPLE')"
            )
        with inferline.sql.connect(db) as con:
            table = con.fetch(con.run_script("SELECT size, data FROM ds.mem ORDER BY size"))
        assert table is not None and table.to_pylist() == [
            {"size": 3, "data": b"one"},
            {"size": 5, "data": b"three"},
        ]
    finally:
        memory.rm("/inferline-test", recursive=True)


def test_external_file_tables_by_format(tmp_path: Path, con: SqlConnection) -> None:
    (tmp_path / "rows.csv").write_text("a,b\n1,x\n2,y\n")
    con.sql(f"CREATE EXTERNAL TABLE ext.rows OPTIONS(format='CSV', uris=['{tmp_path}/rows.csv'])")
    table = con.fetch(con.run_script("SELECT a, b FROM ext.rows ORDER BY a"))
    assert table is not None and table.to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
