"""decode_image() / ML.DECODE_IMAGE: bytes -> [height][width][channels] floats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import inferline.sql
from inferline.errors import SqlError
from inferline.sql.decode import decode


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
