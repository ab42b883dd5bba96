"""decode_image() / ML.DECODE_IMAGE: bytes -> [height][width][channels] floats."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import inferline.sql
from inferline.errors import SqlError
from inferline.sql.decode import decode, decode_column, decode_threads


def _png(mode: str, size: tuple[int, int], color: int | tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_grayscale_keeps_one_channel_scaled_to_unit_range() -> None:
    pixels = decode(_png("L", (3, 2), 255))
    assert pixels.shape == (2, 3, 1) and pixels.dtype == np.float32
    assert pixels.max() == 1.0


def test_rgb_palette_and_resize() -> None:
    assert decode(_png("RGB", (4, 4), (255, 0, 51))).shape == (4, 4, 3)
    assert decode(_png("RGB", (4, 4), (255, 0, 51)))[0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert decode(_png("P", (4, 4), 1)).shape == (4, 4, 3)
    assert decode(_png("RGBA", (8, 6), (1, 2, 3, 4)), height=3, width=5).shape == (3, 5, 4)


def test_sql_functions_return_nested_arrays() -> None:
    with inferline.sql.connect() as con:
        con.raw.execute(
            "CREATE TABLE blobs AS SELECT * FROM (VALUES (1, ?::BLOB), (2, ?::BLOB), (3, NULL)) t(i, data)",
            [_png("L", (3, 2), 128), _png("RGB", (2, 2), (0, 0, 0))],
        )
        rows = con.raw.sql("SELECT i, decode_image(data) AS image FROM blobs ORDER BY i").fetchall()
        assert np.asarray(rows[0][1]).shape == (2, 3, 1)
        assert np.asarray(rows[1][1]).shape == (2, 2, 3)
        assert rows[2][1] is None
        resized = con.raw.sql("SELECT decode_image(data, 7, 5) FROM blobs WHERE i = 2").fetchall()
        assert np.asarray(resized[0][0]).shape == (7, 5, 3)
        bq = con.sql("SELECT ML.DECODE_IMAGE(data) AS image FROM blobs WHERE i = 1")
        assert bq is not None and np.asarray(bq.fetchall()[0][0]).shape == (2, 3, 1)


def test_bytes_that_are_not_an_image_name_the_row_and_the_fix() -> None:
    with inferline.sql.connect() as con:
        with pytest.raises(SqlError, match=r"^statement 1: decode_image: row 0 is not an image .*TRY\(...\)"):
            con.fetch(con.run_script("SELECT decode_image('not a png'::BLOB)"))


def _drawn(i: int, side: int = 80) -> bytes:
    """A different RGB picture per `i`: a gradient background and a disc, drawn with Pillow."""
    from PIL import ImageDraw

    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.stack(
        [np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.full((side, side), i)], -1
    )
    image = Image.fromarray((pixels + i * 7).astype(np.uint8), "RGB")
    ImageDraw.Draw(image).ellipse((i % 30, i % 20, i % 30 + 40, i % 20 + 30), fill=(255 - i, i, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(blobs: list[bytes | None], h: int, w: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    n = len(blobs)
    return pa.array(blobs, pa.binary()), pa.array([h] * n, pa.int32()), pa.array([w] * n, pa.int32())


def test_a_chunk_of_larger_images_decodes_on_threads_in_row_order_like_one_at_a_time() -> None:
    blobs: list[bytes | None] = [_drawn(i) for i in range(40)]
    blobs[0] = blobs[17] = blobs[39] = None
    jobs = [(i, b, 24, 20) for i, b in enumerate(blobs) if b is not None]
    assert decode_threads(jobs) == max(os.cpu_count() or 1, 1)
    for h, w in ((0, 0), (24, 20)):
        column = decode_column(*_chunk(blobs, h, w)).to_pylist()
        assert [v is None for v in column] == [b is None for b in blobs]
        for value, blob in zip(column, blobs, strict=True):
            if blob is not None:
                expected = decode(blob, height=h, width=w)
                assert np.array_equal(np.asarray(value, dtype=np.float32), expected)
    # The same through DuckDB: one chunk of 40 rows.
    with inferline.sql.connect() as con:
        con.raw.execute("CREATE TABLE blobs (i INTEGER, data BLOB)")
        con.raw.executemany("INSERT INTO blobs VALUES (?, ?)", list(enumerate(blobs)))
        rows = con.raw.sql("SELECT i, decode_image(data, 24, 20) FROM blobs ORDER BY i").fetchall()
    for (i, value), blob in zip(rows, blobs, strict=True):
        assert (value is None) == (blob is None)
        if blob is not None:
            assert np.array_equal(np.asarray(value, np.float32), decode(blob, height=24, width=20)), i


def test_tiny_images_and_small_chunks_decode_on_the_calling_thread() -> None:
    tiny = [(i, _png("L", (28, 28), i), 0, 0) for i in range(40)]
    assert decode_threads(tiny) == 1
    assert decode_threads(tiny[:4]) == 1
    # A tiny image resized to a large one is large work: threads again.
    assert decode_threads([(i, b, 200, 200) for i, b, _, _ in tiny]) == max(os.cpu_count() or 1, 1)


def test_the_first_bad_row_of_a_chunk_is_reported_when_decoding_on_threads() -> None:
    blobs: list[bytes | None] = [_drawn(i) for i in range(40)]
    blobs[13] = blobs[31] = b"not an image at all"
    with pytest.raises(SqlError, match=r"^decode_image: row 13 is not an image \(19 bytes starting 6e6f7420"):
        decode_column(*_chunk(blobs, 16, 16))
    blobs[13] = None
    with pytest.raises(SqlError, match=r"^decode_image: row 31 is not an image .*TRY\(...\)"):
        decode_column(*_chunk(blobs, 16, 16))
    with inferline.sql.connect() as con:
        con.raw.execute("CREATE TABLE blobs (i INTEGER, data BLOB)")
        con.raw.executemany("INSERT INTO blobs VALUES (?, ?)", list(enumerate(blobs)))
        with pytest.raises(SqlError, match=r"^statement 1: decode_image: row 31 is not an image "):
            con.fetch(con.run_script("SELECT decode_image(data, 16, 16) FROM blobs ORDER BY i"))


def test_a_chunk_is_scaled_at_once_as_each_image_alone_8_and_16_bit() -> None:
    eight = [_png("L", (28, 28), i * 9) for i in range(20)] + [_png("RGB", (28, 28), (3, 200, 255))]
    deep = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 250
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    sixteen = buffer.getvalue()
    for blobs in ([*eight, None], [eight[0], None, sixteen, eight[-1]]):
        column = decode_column(*_chunk(blobs, 0, 0)).to_pylist()
        for value, blob in zip(column, blobs, strict=True):
            assert (value is None) == (blob is None)
            if blob is not None:
                got = np.asarray(value, dtype=np.float32)
                assert got.dtype == np.float32 and np.array_equal(got, decode(blob))
    assert decode(sixteen).max() == np.float32(255 * 250) / np.float32(65535)
