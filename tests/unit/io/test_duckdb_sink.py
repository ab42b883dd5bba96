"""DuckDBSink: an upsert on `key` across batches and runs, whichever statement writes a batch
(a plain INSERT of new keys, INSERT OR REPLACE, or DELETE + INSERT for tables with lists), in
the sink's own tables (no index: the process keeps the keys' hashes) and in tables made with a
PRIMARY KEY on `key`."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.errors import SinkError, SinkSchemaError
from inferline.io.duckdb import DuckDBSink, _dedupe_last

SHAPES = [False, True]
SHAPE_IDS = ["labels", "scores"]


def results(keys: Iterable[int], version: int, *, scores: bool = False) -> pa.RecordBatch:
    """Prediction results as the engine hands them over: `version` marks which write a row came from."""
    names = [f"data.csv#{k}" for k in keys]
    columns: dict[str, pa.Array] = {
        "key": pa.array(names),
        "prediction": pa.array([version] * len(names), type=pa.int64()),
    }
    if scores:
        columns["scores"] = pa.array([[float(version), 0.5]] * len(names), type=pa.list_(pa.float32()))
    columns["model_id"] = pa.array([f"iris/{version}"] * len(names))
    return pa.RecordBatch.from_pydict(columns)


def write_run(path: Path | str, batches: Sequence[pa.RecordBatch], table: str = "results") -> None:
    sink = DuckDBSink(str(path), table)
    sink.open()
    try:
        for batch in batches:
            sink.write(batch)
            sink.commit()
    finally:
        sink.close()


def table_rows(path: Path | str, table: str = "results") -> dict[str, int]:
    with duckdb.connect(str(path)) as con:
        rows = con.execute(f"SELECT key, prediction, model_id FROM {table}").fetchall()
    got = {key: prediction for key, prediction, _ in rows}
    assert len(got) == len(rows), "a key is in the table twice"
    assert all(model_id == f"iris/{prediction}" for _, prediction, model_id in rows)
    return got


def expected(*writes: tuple[Iterable[int], int]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for keys, version in writes:
        rows.update({f"data.csv#{k}": version for k in keys})
    return rows


@pytest.mark.parametrize("scores", SHAPES, ids=SHAPE_IDS)
def test_rerun_replaces_existing_rows_and_adds_new_ones(tmp_path: Path, scores: bool) -> None:
    db = tmp_path / "w.duckdb"
    write_run(db, [results(range(0, 100), 1, scores=scores), results(range(100, 200), 1, scores=scores)])
    # A re-run: all keys known, then half known, then all new.
    second = [range(0, 100), range(150, 250), range(250, 300)]
    write_run(db, [results(keys, 2, scores=scores) for keys in second])
    assert table_rows(db) == expected((range(0, 150), 1), *((keys, 2) for keys in second))
    if scores:
        with duckdb.connect(str(db)) as con:
            got = con.execute("SELECT scores FROM results WHERE key = 'data.csv#0'").fetchall()
        assert got == [([2.0, 0.5],)]


@pytest.mark.parametrize("scores", SHAPES, ids=SHAPE_IDS)
def test_keys_repeated_across_batches_of_one_run_keep_the_last_row(tmp_path: Path, scores: bool) -> None:
    db = tmp_path / "w.duckdb"
    writes = [(range(0, 10), 1), (range(5, 15), 2), (range(0, 3), 3), (range(20, 30), 4), (range(29, 31), 5)]
    write_run(db, [results(keys, version, scores=scores) for keys, version in writes])
    assert table_rows(db) == expected(*writes)


def test_dedupe_keeps_the_last_row_of_each_key_in_order() -> None:
    batch = pa.RecordBatch.from_pydict({"key": ["a", "a", "b", "c", "a"], "v": [1, 2, 3, 4, 5]})
    assert _dedupe_last(batch, "key").to_pydict() == {"key": ["b", "c", "a"], "v": [3, 4, 5]}


@pytest.mark.parametrize("scores", SHAPES, ids=SHAPE_IDS)
def test_duplicate_keys_within_a_batch_keep_the_last_row(tmp_path: Path, scores: bool) -> None:
    db = tmp_path / "w.duckdb"
    first = results([1, 2, 1, 3, 1], 1, scores=scores)
    versions = pa.array([10, 20, 11, 30, 12], type=pa.int64())
    batch = first.set_column(1, "prediction", versions).set_column(
        first.schema.get_field_index("model_id"),
        "model_id",
        pa.array([f"iris/{v}" for v in versions.to_pylist()]),
    )
    write_run(db, [batch])
    assert table_rows(db) == {"data.csv#1": 12, "data.csv#2": 20, "data.csv#3": 30}
    write_run(db, [batch])  # the same batch again, into a table that holds its keys
    assert table_rows(db) == {"data.csv#1": 12, "data.csv#2": 20, "data.csv#3": 30}


@pytest.mark.parametrize("scores", SHAPES, ids=SHAPE_IDS)
def test_nothing_written_without_a_commit_survives_close(tmp_path: Path, scores: bool) -> None:
    db = tmp_path / "w.duckdb"
    write_run(db, [results(range(0, 10), 1, scores=scores)])
    sink = DuckDBSink(str(db), "results")
    sink.open()
    sink.write(results(range(5, 20), 2, scores=scores))  # refused as new keys, then upserted
    sink.close()
    sink = DuckDBSink(str(db), "results")
    sink.open()
    sink.write(results(range(100, 110), 3, scores=scores))  # new keys: a plain INSERT
    sink.rollback()
    sink.close()
    assert table_rows(db) == expected((range(0, 10), 1))


@pytest.mark.parametrize("constraint", ["PRIMARY KEY", ""])
@pytest.mark.parametrize("scores", SHAPES, ids=SHAPE_IDS)
def test_columns_the_pipeline_does_not_write_keep_their_values(
    tmp_path: Path, scores: bool, constraint: str
) -> None:
    db = tmp_path / "w.duckdb"
    lists = ", scores FLOAT[]" if scores else ""
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"CREATE TABLE results (key VARCHAR {constraint}, prediction BIGINT{lists}, model_id VARCHAR, "
            "note VARCHAR)"
        )
        con.execute(
            "INSERT INTO results (key, prediction, model_id, note) VALUES ('data.csv#1', 1, 'iris/1', 'x')"
        )
    write_run(db, [results([1, 2], 2, scores=scores)])
    assert table_rows(db) == {"data.csv#1": 2, "data.csv#2": 2}
    with duckdb.connect(str(db)) as con:
        notes = dict(con.execute("SELECT key, note FROM results").fetchall())
    assert notes == {"data.csv#1": "x", "data.csv#2": None}


@pytest.mark.parametrize("constraint", ["PRIMARY KEY", "UNIQUE"])
def test_a_table_made_elsewhere_with_a_unique_key_is_upserted(tmp_path: Path, constraint: str) -> None:
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute(
            f"CREATE TABLE analytics.results (key VARCHAR {constraint}, prediction BIGINT, model_id VARCHAR)"
        )
        con.execute("INSERT INTO analytics.results VALUES ('data.csv#1', 1, 'iris/1')")
    write_run(db, [results([1, 2], 2), results([3], 3)], table="analytics.results")
    assert table_rows(db, "analytics.results") == {"data.csv#1": 2, "data.csv#2": 2, "data.csv#3": 3}


def test_narrower_integers_go_into_wider_columns(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    write_run(db, [results([1], 1)])
    narrow = results([1, 2], 2)
    narrow = narrow.set_column(1, "prediction", narrow.column(1).cast(pa.int32()))
    write_run(db, [narrow])
    assert table_rows(db) == {"data.csv#1": 2, "data.csv#2": 2}


def _error(path: Path, batches: Sequence[pa.RecordBatch], message: str) -> None:
    with pytest.raises(SinkError, match="^" + re.escape(message) + "$"):
        write_run(path, batches)


def test_results_without_the_key_column_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    keyless = results([1], 1).drop_columns(["key"])
    _error(db, [keyless], f"{db} table results: results have no 'key' column")
    write_run(db, [results([1], 1)])
    _error(db, [keyless], f"{db} table results: results have no 'key' column")


def test_a_column_the_existing_table_lacks_is_added_and_older_rows_are_null_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "w.duckdb"
    write_run(db, [results([1], 1)])
    write_run(db, [results([2], 1, scores=True), results([3], 1)])  # and a batch without it
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.sql("SELECT key, scores FROM results ORDER BY key").fetchall()
    assert [r[1] is None for r in rows] == [True, False, True]
    assert f"{db} table results: added column scores (FLOAT[])" in caplog.text
    # Within one run too, after the table was made.
    write_run(tmp_path / "new.duckdb", [results([1], 1), results([2], 1, scores=True)])
    assert table_rows(tmp_path / "new.duckdb") == {"data.csv#1": 1, "data.csv#2": 1}


def test_a_column_of_another_type_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    write_run(db, [results([1], 1)])
    wider = results([2], 1)
    wider = wider.set_column(1, "prediction", wider.column(1).cast(pa.float64()))
    with pytest.raises(SinkSchemaError):  # the engine dead-letters the batch and goes on
        write_run(db, [wider])
    _error(
        db,
        [wider],
        f"{db} table results: column 'prediction' is BIGINT in the existing table but this pipeline "
        "writes DOUBLE; drop the table or write to another (--set sink.table=NAME)",
    )
    assert table_rows(db) == {"data.csv#1": 1}


def test_the_sinks_tables_have_no_index_and_new_keys_never_read_the_table(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sink = DuckDBSink(str(db), "results")
    sink.open()
    try:
        for start in range(0, 50, 10):
            sink.write(results(range(start, start + 10), 1))
            sink.commit()
        assert sink._keys is not None and sink._keys.loads == 1  # once, empty, at the first write
    finally:
        sink.close()
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM duckdb_indexes()").fetchall() == [(0,)]
        assert con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
        ).fetchall() == [(0,)]
    assert table_rows(db) == expected((range(0, 50), 1))


def test_an_existing_tables_key_hashes_are_read_at_open_not_in_a_write_turn(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    write_run(db, [results(range(0, 30), 1)])
    sink = DuckDBSink(str(db), "results")
    sink.open()
    try:
        assert sink._keys is not None and (sink._keys.loads, sink._keys.rows) == (1, 30)
        assert sink._writer is not None and sink._writer._name == ""  # read in a read turn, let go
        sink.write(results(range(25, 40), 2))
        sink.commit()
        assert (sink._keys.loads, sink._keys.rows) == (1, 40)  # the first write read nothing more
    finally:
        sink.close()
    assert table_rows(db) == expected((range(0, 25), 1), (range(25, 40), 2))


def test_an_existing_table_without_an_index_is_upserted(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE results (key VARCHAR, prediction BIGINT, model_id VARCHAR)")
        con.execute("INSERT INTO results VALUES ('data.csv#1', 1, 'iris/1'), ('data.csv#2', 1, 'iris/1')")
    write_run(db, [results([2, 3], 2)])
    assert table_rows(db) == {"data.csv#1": 1, "data.csv#2": 2, "data.csv#3": 2}


def test_writes_of_another_sink_between_batches_are_noticed(tmp_path: Path) -> None:
    """Two writers of one table take turns; each one's key hashes go stale and are read again."""
    db = tmp_path / "w.duckdb"
    first, second = DuckDBSink(str(db), "results"), DuckDBSink(str(db), "results")
    first.open()
    second.open()
    try:
        for sink, keys, version in [(first, [1, 2, 3], 1), (second, [3, 4, 5], 2), (first, [5, 6], 3)]:
            sink.write(results(keys, version))
            sink.commit()
        first.write(results([7], 4))
        first.rollback()  # not in the table: the next write must not believe it is
        first.write(results([7, 8], 5))
        first.commit()
    finally:
        first.close()
        second.close()
    assert table_rows(db) == expected(([1, 2, 3], 1), ([3, 4, 5], 2), ([5, 6], 3), ([7, 8], 5))


def test_a_joined_sink_commits_and_rolls_back_with_its_owner(tmp_path: Path) -> None:
    """Dead letters beside results in one file: one transaction a batch, both land or neither."""
    db = tmp_path / "w.duckdb"
    owner, joined = DuckDBSink(str(db), "results"), DuckDBSink(str(db), "errors")
    elsewhere = DuckDBSink(str(tmp_path / "other.duckdb"), "errors")
    for sink in (owner, joined, elsewhere):
        sink.open()
    try:
        assert not elsewhere.join(owner)  # another file keeps its own transactions
        assert joined.join(owner)
        owner.write(results([1, 2], 1))
        joined.write(results([10], 1))
        owner.commit()  # commits the joined sink's rows too
        owner.write(results([3], 2))
        joined.write(results([11], 2))
        owner.rollback()  # and rolls them back
        joined.commit()
        joined.write(results([12], 3))  # a batch with dead letters only
        joined.commit()
    finally:
        for sink in (owner, joined, elsewhere):
            sink.close()
    assert table_rows(db) == expected(([1, 2], 1))
    assert table_rows(db, "errors") == expected(([10], 1), ([12], 3))


batch_keys = st.lists(st.integers(0, 12), min_size=1, max_size=10)


@settings(max_examples=30, deadline=None)
@given(
    scores=st.booleans(),
    indexed=st.booleans(),
    runs=st.lists(st.lists(batch_keys, min_size=1, max_size=6), min_size=1, max_size=3),
)
def test_any_runs_of_batches_leave_the_last_row_of_every_key(
    scores: bool, indexed: bool, runs: list[list[list[int]]]
) -> None:
    model: dict[str, int] = {}
    version = 0
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "w.duckdb"
        if indexed:  # a table made with a PRIMARY KEY (as this sink made them before)
            with duckdb.connect(str(db)) as con:
                lists = ", scores FLOAT[]" if scores else ""
                con.execute(
                    f"CREATE TABLE results (key VARCHAR PRIMARY KEY, prediction BIGINT{lists}, "
                    "model_id VARCHAR)"
                )
        for run in runs:
            batches = []
            for keys in run:
                version += 1
                batches.append(results(keys, version, scores=scores))
                model.update(expected((keys, version)))
            write_run(db, batches)
            assert table_rows(db) == model
