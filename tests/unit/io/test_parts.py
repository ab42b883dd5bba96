from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.errors import SinkError, SpecError
from inferline.io.parts import JOURNAL, CommitJournal, PartSink, check_part_dir, part_files

V1 = pa.record_batch({"key": ["a", "b"], "prediction": [0, 1]})
V2 = pa.record_batch({"key": ["c"], "prediction": [2], "scores": [[0.1, 0.9]]})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_parts_roll_by_rows_and_time_and_a_wider_schema_is_a_new_part(tmp_path: Path) -> None:
    clock = Clock()
    sink = PartSink(str(tmp_path / "out.parquet"), "parquet", options={"roll_rows": 3}, clock=clock)
    sink.open()
    assert not sink.due() and not sink.unsealed
    sink.write(V1)
    assert sink.unsealed and not sink.due()
    clock.now = 9.9
    assert not sink.due()
    clock.now = 10.0  # roll_seconds defaults to 10 after the part's first row
    assert sink.due()
    sink.write(V2)  # new column: the open part is finished, the rows go to the next one
    assert sink.due()  # 3 rows
    renames = sink.seal()
    names = [os.path.basename(target) for _, target in renames]
    assert names == ["part-000001.parquet", "part-000002.parquet"]
    assert all(os.path.basename(p).startswith(".") and p.endswith(".partial") for p, _ in renames)
    assert part_files(str(tmp_path / "out.parquet")) == []  # nothing is in place before its commit
    CommitJournal(str(tmp_path / "out.parquet")).commit(renames, ["1", "2", "3"])
    parts = part_files(str(tmp_path / "out.parquet"))
    assert [pq.read_table(p).to_pylist() for p in parts] == [V1.to_pylist(), V2.to_pylist()]
    assert not sink.unsealed and not sink.due()
    sink.close()

    again = PartSink(str(tmp_path / "out.parquet"), "parquet")
    again.open()
    again.write(V1)
    ((_, target),) = again.seal()
    assert os.path.basename(target) == "part-000003.parquet"  # never an earlier part's name
    again.close()


def test_a_crash_after_the_journal_finishes_the_renames_and_gives_the_ids_back(tmp_path: Path) -> None:
    folder = tmp_path / "out.jsonl"
    sink = PartSink(str(folder), "jsonl")
    sink.open()
    sink.write(V1)
    renames = sink.seal()
    journal = CommitJournal(str(folder))
    # The journal is written, then the process dies before renaming (or before acking).
    journal._rename = lambda renames: None  # type: ignore[method-assign]
    journal.commit(renames, ["7", "8"])
    assert part_files(str(folder)) == []
    sink.write(V2)  # never committed: a killed run's partial
    sink.seal()
    sink.close()

    recovered = CommitJournal(str(folder))
    assert recovered.recover() == ["7", "8"]
    assert [os.path.basename(p) for p in part_files(str(folder))] == ["part-000001.jsonl"]
    assert recovered.recover() == ["7", "8"]  # again: nothing left to rename, the ids again
    restarted = PartSink(str(folder), "jsonl")
    restarted.open()
    restarted.clean()
    assert sorted(os.listdir(folder)) == ["_inferline.lock", JOURNAL, "part-000001.jsonl"]
    rows = [json.loads(line) for line in Path(part_files(str(folder))[0]).read_text().splitlines()]
    assert rows == V1.to_pylist()
    restarted.close()


def test_a_crash_before_the_journal_commits_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "out.csv"
    sink = PartSink(str(folder), "csv")
    sink.open()
    sink.write(V1)
    sink.seal()  # sealed and fsynced, but the process dies before the journal
    sink.close()
    assert CommitJournal(str(folder)).recover() == []
    restarted = PartSink(str(folder), "csv")
    restarted.open()
    restarted.clean()
    assert sorted(os.listdir(folder)) == ["_inferline.lock"]
    restarted.close()


def test_one_stream_at_a_time_writes_a_part_directory(tmp_path: Path) -> None:
    first = PartSink(str(tmp_path / "out.parquet"), "parquet")
    first.open()
    second = PartSink(str(tmp_path / "out.parquet"), "parquet")
    with pytest.raises(SinkError, match=r"out.parquet is being written by another running stream; give each"):
        second.open()
    first.close()
    second.open()  # the lock went with the first sink
    second.close()


def test_a_part_directory_never_replaces_a_file_or_mixes_with_other_files(tmp_path: Path) -> None:
    batch_output = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"a": [1]}), batch_output)
    with pytest.raises(SinkError, match=r"preds.parquet is a file \(a batch run.s output\?\); a stream"):
        check_part_dir(str(batch_output), "parquet")
    other = tmp_path / "data.parquet"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SinkError, match=r"holding 'notes.txt', not a stream sink's part files: pass"):
        check_part_dir(str(other), "parquet")
    with pytest.raises(SinkError, match=r"named like a DuckDB database"):
        check_part_dir(str(tmp_path / "w.duckdb"), "parquet")
    with pytest.raises(SinkError, match=r"write to a local path"):
        check_part_dir("s3://bucket/out.parquet", "parquet")
    check_part_dir(str(tmp_path / "new.parquet"), "parquet")


def test_roll_options_are_checked() -> None:
    with pytest.raises(SpecError, match=r"^s.yaml: sink.options.roll_seconds is 0; expected a number > 0"):
        PartSink("out.parquet", "parquet", options={"roll_seconds": 0}, origin="s.yaml")
