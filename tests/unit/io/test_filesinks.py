"""File sinks when the results' columns change within a run (a new model): new columns start
the next file with the wider schema, missing ones are NULL, a type change is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.errors import SinkSchemaError
from inferline.io.filesinks import CsvSink, ParquetSink, output_files

V1 = pa.record_batch({"key": ["a"], "prediction": [1], "model_id": ["m/1"]})
V2 = pa.record_batch({"key": ["b"], "prediction": [2], "scores": [[0.5, 0.5]]})
V2_REORDERED = pa.record_batch({"scores": [[0.1, 0.9]], "key": ["c"], "prediction": [3.0]})


def test_parquet_starts_a_wider_file_for_new_columns_and_missing_ones_are_null(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.open()
    sink.write(V1)
    with caplog.at_level(logging.WARNING, logger="inferline.sinks"):
        sink.write(V2)
        sink.write(V2_REORDERED)  # same columns, other order, int-valued floats: same file
    sink.commit()
    sink.close()
    second = str(tmp_path / "out.schema-2.parquet")
    assert output_files(path) == [path, second]
    assert pq.read_table(path).to_pylist() == [{"key": "a", "prediction": 1, "model_id": "m/1"}]
    assert pq.read_table(second).schema.names == ["key", "prediction", "model_id", "scores"]
    rows = duckdb.sql(
        f"SELECT * FROM read_parquet('{tmp_path}/out*.parquet', union_by_name = true) ORDER BY key"
    ).fetchall()
    assert rows == [("a", 1, "m/1", None), ("b", 2, None, [0.5, 0.5]), ("c", 3, None, [0.1, 0.9])]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: new column scores: rows from here on go to {second} (a Parquet file has one "
        f"schema; read both with read_parquet('{tmp_path}/out*.parquet', union_by_name = true))"
    ]


def test_parquet_refuses_a_type_it_cannot_cast_without_starting_a_file(tmp_path: Path) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.open()
    sink.write(V1)
    with pytest.raises(SinkSchemaError) as caught:
        sink.write(pa.record_batch({"key": ["d"], "prediction": ["x"], "scores": [[1.0]]}))
    assert str(caught.value) == (
        f"{path}: column 'prediction' is string but the file has int64; write to another file "
        "(--set sink.path=NEW.parquet) to keep both"
    )
    sink.write(pa.record_batch({"key": ["e"], "prediction": [5]}))
    sink.close()
    assert output_files(path) == [path]
    assert pq.read_table(path).column("key").to_pylist() == ["a", "e"]


def test_a_column_the_first_batch_could_only_call_null_gets_its_type_in_the_next_file(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.open()
    sink.write(pa.record_batch({"key": ["a"], "prediction": pa.nulls(1)}))  # the model failed on it
    sink.write(pa.record_batch({"key": ["b"], "prediction": [2]}))
    sink.close()
    assert pq.read_schema(str(tmp_path / "out.schema-2.parquet")).field("prediction").type == pa.int64()


def test_a_rerun_with_fewer_schemas_removes_the_older_runs_later_files_and_a_failed_one_keeps_them(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "out.parquet")
    for batches, ok in (([V1, V2], True), ([V1], False), ([V1], True)):
        sink = ParquetSink(path)
        sink.open()
        for batch in batches:
            sink.write(batch)
        if ok:
            sink.close()
        else:
            sink.abort()
            assert len(output_files(path)) == 2  # a failed run replaces nothing
    assert output_files(path) == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_an_interrupted_run_removes_every_partial_file(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "out.parquet"))
    sink.open()
    sink.write(V1)
    sink.write(V2)
    sink.discard()
    assert list(tmp_path.iterdir()) == []


def test_csv_writes_later_batches_by_name_and_starts_a_wider_file_for_new_columns(tmp_path: Path) -> None:
    path = str(tmp_path / "out.csv")
    sink = CsvSink(path)
    sink.open()
    sink.write(V1)
    sink.write(pa.record_batch({"model_id": ["m/1"], "key": ["a2"]}))  # by name; no prediction
    sink.write(V2)
    sink.write(V2_REORDERED)
    sink.close()
    assert (tmp_path / "out.csv").read_text() == '"key","prediction","model_id"\n"a",1,"m/1"\n"a2",,"m/1"\n'
    assert (tmp_path / "out.schema-2.csv").read_text() == (
        '"key","prediction","model_id","scores"\n"b",2,,"[0.5,0.5]"\n"c",3,,"[0.1,0.9]"\n'
    )
    assert output_files(path) == [path, str(tmp_path / "out.schema-2.csv")]


def test_parquet_gathers_small_batches_into_row_groups_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.row_group_rows = 10
    sink.open()
    for start in range(0, 21, 3):
        sink.write(pa.record_batch({"key": [str(k) for k in range(start, start + 3)], "n": [start] * 3}))
        sink.commit()
    sink.close()
    file = pq.ParquetFile(path)
    # Written once 10 rows were held (4 batches), the rest when the file closes.
    assert [file.metadata.row_group(i).num_rows for i in range(file.metadata.num_row_groups)] == [12, 9]
    assert file.read().column("key").to_pylist() == [str(k) for k in range(21)]
    assert sink.rows == 21


def test_a_failed_runs_partial_parquet_file_holds_the_rows_not_yet_in_a_row_group(tmp_path: Path) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.open()
    sink.write(V1)
    sink.abort()
    assert pq.read_table(path + ".partial").to_pylist() == V1.to_pylist()
    assert not (tmp_path / "out.parquet").exists()


def test_parquet_dictionaries_for_flat_columns_but_keys_and_lists_no_stats_for_keys(tmp_path: Path) -> None:
    path = str(tmp_path / "out.parquet")
    sink = ParquetSink(path)
    sink.open()
    sink.write(pa.record_batch({"key": ["a", "b"], "label": ["x", "x"], "scores": [[0.1, 0.9], [0.8, 0.2]]}))
    sink.close()
    group = pq.ParquetFile(path).metadata.row_group(0)
    columns = [group.column(i) for i in range(group.num_columns)]
    dictionary = {c.path_in_schema: "RLE_DICTIONARY" in c.encodings for c in columns}
    assert dictionary == {"key": False, "label": True, "scores.list.element": False}
    # Keys (`file:row`) sort as text, not by row: no min/max for them, the others keep theirs.
    statistics = {c.path_in_schema: c.is_stats_set for c in columns}
    assert statistics == {"key": False, "label": True, "scores.list.element": True}
