from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from inferline.engine.acks import AckGate
from inferline.errors import SpecError
from inferline.io.base import SourceBatch
from inferline.io.parts import PartSink, part_files

ROWS = pa.record_batch({"key": ["a", "b"], "prediction": [0, 1]})


class Source:
    """Records acks, as a topic would."""

    bounded = False

    def __init__(self) -> None:
        self.acked: list[Any] = []

    def open(self) -> None: ...

    def batches(self) -> Iterator[SourceBatch]:
        return iter(())

    def ack(self, position: Any) -> None:
        self.acked.append(position)

    def progress_total(self) -> int | None:
        return None

    def close(self) -> None: ...


def test_without_part_sinks_a_batch_is_acked_once_committed() -> None:
    source = Source()
    gate = AckGate(source, [])
    assert gate.recover() == 0
    gate.committed(["1"])
    assert source.acked == [["1"]]


def test_batches_wait_for_their_part_and_are_acked_after_its_rename(tmp_path: Path) -> None:
    source = Source()
    sink = PartSink(str(tmp_path / "out.parquet"), "parquet", options={"roll_rows": 4})
    sink.open()
    gate = AckGate(source, [sink])
    sink.write(ROWS)
    gate.committed(["1", "2"])
    assert source.acked == [] and part_files(sink.directory) == []
    gate.committed(None)  # a batch of dead letters only waits behind it, in order
    gate.idle(urgent=False)
    assert source.acked == []
    sink.write(ROWS)
    gate.committed(["3", "4"])  # 4 rows: the part rolls
    assert source.acked == [["1", "2"], None, ["3", "4"]]
    assert len(part_files(sink.directory)) == 1
    sink.write(ROWS)
    gate.committed(["5", "6"])
    gate.idle(urgent=True)  # the source waits for its acks (a suspect message is next)
    assert source.acked[-1] == ["5", "6"] and len(part_files(sink.directory)) == 2
    sink.close()

    # A restart acks the last commit's ids again (a kill may have come before its acks).
    restarted = Source()
    sink = PartSink(str(tmp_path / "out.parquet"), "parquet")
    sink.open()
    assert AckGate(restarted, [sink]).recover() == 2
    assert restarted.acked == [["5", "6"]]
    sink.close()


def test_a_roll_interval_near_the_sources_lease_is_refused(tmp_path: Path) -> None:
    source = Source()
    source.lease_seconds = 20.0  # type: ignore[attr-defined]
    sink = PartSink(str(tmp_path / "out.parquet"), "parquet", options={"roll_seconds": 10})
    with pytest.raises(SpecError, match=r"roll_seconds \(10\) must be under half the source's lease \(20 s"):
        AckGate(source, [sink])
    AckGate(source, [PartSink(str(tmp_path / "out.parquet"), "parquet", options={"roll_seconds": 9.5})])


def test_a_batch_with_no_rows_in_a_part_is_acked_at_once(tmp_path: Path) -> None:
    source = Source()
    sink = PartSink(str(tmp_path / "out.jsonl"), "jsonl")
    sink.open()
    gate = AckGate(source, [sink])
    gate.committed(["9"])
    assert source.acked == [["9"]]
    sink.close()
