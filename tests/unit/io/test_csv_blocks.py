"""A CSV file read as its first block (types inferred) then the rest typed by that block:
the same rows, types and dead letters as Arrow's streaming reader, which infers every block."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from inferline.io.csv_blocks import BLOCK, REST_BLOCK, CsvBlocks, InvalidRows, streaming_blocks, typed_blocks


def _csv(rows: int) -> bytes:
    # ~1.8 MB: the first block and a few more; a malformed line in the first and in the rest.
    lines = ["id,value,label"]
    for i in range(rows):
        lines.append("7,8" if i in (10, 110_000) else f"{i},{i % 97 / 7:.4f},{'abc'[i % 3]}")
    return ("\n".join(lines) + "\n").encode()


def _read(blocks: CsvBlocks) -> tuple[pa.Table, list[int]]:
    batches, ends = [], []
    while True:
        try:
            batches.append(blocks.read_next_batch())
        except StopIteration:
            return pa.Table.from_batches(batches, schema=blocks.schema), ends
        ends.append(blocks.end)


def test_the_rest_is_typed_by_the_first_block_and_reads_as_the_streaming_reader() -> None:
    data = _csv(120_000)
    assert len(data) > BLOCK + 2 * REST_BLOCK
    typed_dead, streamed_dead = InvalidRows("f.csv"), InvalidRows("f.csv")
    blocks = typed_blocks(io.BytesIO(data), typed_dead, size=len(data))
    assert blocks is not None
    got, ends = _read(blocks)
    want, _ = _read(streaming_blocks(io.BytesIO(data), streamed_dead, size=len(data), types={}))
    assert got.schema == want.schema and got.schema.field("value").type == pa.float64()
    assert got.equals(want) and got.num_rows == 119_998
    # The same two bad lines, under the same keys (text hashes: the threaded parser has no numbers).
    assert [d.key for d in typed_dead.drain()] == [d.key for d in streamed_dead.drain()]
    # Each batch ends where its last row ends, within a line; the last one at the file's end.
    assert ends == sorted(ends) and ends[-1] == len(data)
    first_end = data.rfind(b"\n", 0, BLOCK) + 1
    assert ends[0] == first_end and blocks.schema.names == ["id", "value", "label"]


def test_a_later_value_that_does_not_fit_the_first_blocks_type_fails_as_before() -> None:
    data = _csv(120_000).replace(b"\n95000,", b"\n95000.5,")  # id: int64 in the first block
    blocks = typed_blocks(io.BytesIO(data), InvalidRows("f.csv"), size=len(data))
    assert blocks is not None
    with pytest.raises(pa.ArrowInvalid, match="conversion error"):
        _read(blocks)


def test_a_small_file_is_one_block_and_a_first_block_that_does_not_parse_alone_is_left_to_arrow() -> None:
    small = b"a,b\n1,x\n2.5,y"  # no final newline: the last line is a row of the only block
    blocks = typed_blocks(io.BytesIO(small), InvalidRows("s.csv"), size=len(small))
    assert blocks is not None
    table, ends = _read(blocks)
    assert table.column("a").to_pylist() == [1.0, 2.5] and ends == [len(small)]
    for unparsed in (b"", b"h" * (BLOCK + 10) + b"\n1\n"):  # empty; no whole line in the first block
        handle = io.BytesIO(unparsed)
        assert typed_blocks(handle, InvalidRows("e.csv"), size=len(unparsed)) is None
        assert handle.tell() == 0
