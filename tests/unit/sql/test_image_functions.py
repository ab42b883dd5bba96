"""ML.RESIZE_IMAGE, ML.CONVERT_COLOR_SPACE and ML.CONVERT_IMAGE_TYPE against Pillow and numpy."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import inferline.sql
from inferline.errors import SqlError
from inferline.sql import SqlConnection, bigquery
from tests.lazy import LazyModule

digits = LazyModule("inferline.examples.digits")  # imports torch: only when a test runs


@pytest.fixture
def con(tmp_path: Path) -> Iterator[SqlConnection]:
    """An object table `ds.images` of three random RGB PNGs (6x10, 6x10, 9x5) and a grayscale one."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, shape in (("a", (6, 10, 3)), ("b", (6, 10, 3)), ("c", (9, 5, 3)), ("gray", (4, 4))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{name}.png")
    with inferline.sql.connect() as connection:
        connection.sql(
            f"CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{folder}/*.png'], object_metadata='SIMPLE')"
        )
        yield connection


def _images(con: SqlConnection, expression: str, where: str = "uri NOT LIKE '%gray%'") -> list[np.ndarray]:
    relation = con.sql(f"SELECT {expression} AS image FROM ds.images WHERE {where} ORDER BY uri")
    assert relation is not None
    return [np.asarray(row[0]) for row in relation.fetchall()]


def _stored(con: SqlConnection) -> list[np.ndarray]:
    relation = con.sql("SELECT uri FROM ds.images WHERE uri NOT LIKE '%gray%' ORDER BY uri")
    assert relation is not None
    return [np.asarray(Image.open(uri)) for (uri,) in relation.fetchall()]


def _pillow(pixels: np.ndarray, size: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """Pillow on float ("F") images, channel by channel; size is (height, width)."""
    channels = [
        np.asarray(Image.fromarray(pixels[:, :, k].astype(np.float32) / 255).resize(size[::-1], method))
        for k in range(pixels.shape[2])
    ]
    return np.stack(channels, axis=-1)


def test_enlarging_equals_pillow_bilinear_and_halving_equals_pillow_box(con: SqlConnection) -> None:
    for got, pixels in zip(
        _images(con, "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 13, 23, FALSE)"), _stored(con), strict=True
    ):
        np.testing.assert_allclose(got, _pillow(pixels, (13, 23), Image.Resampling.BILINEAR), atol=1e-6)
    halves = _images(
        con,
        "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 3, 5, FALSE)",
        "uri NOT LIKE '%gray%' AND uri NOT LIKE '%c.png'",
    )
    for got, pixels in zip(halves, _stored(con)[:2], strict=True):
        np.testing.assert_allclose(got, _pillow(pixels, (3, 5), Image.Resampling.BOX), atol=1e-6)
        # Plain interpolation: no antialiasing, which Pillow's BILINEAR adds when shrinking.
        assert not np.allclose(got, _pillow(pixels, (3, 5), Image.Resampling.BILINEAR), atol=1e-3)


def test_preserving_the_aspect_ratio_fits_the_image_in_the_target(con: SqlConnection) -> None:
    got = _images(con, "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 12, 12, TRUE)")
    # 6x10 -> scale 1.2 -> 7x12 (7.2 rounded down); 9x5 -> scale 4/3 -> 12x6 (6.67 rounded down).
    assert [g.shape for g in got] == [(7, 12, 3), (7, 12, 3), (12, 6, 3)]
    for image, pixels in zip(got, _stored(con), strict=True):
        np.testing.assert_allclose(
            image, _pillow(pixels, image.shape[:2], Image.Resampling.BILINEAR), atol=1e-6
        )


def test_color_spaces_match_pillow_colorsys_and_their_matrices(con: SqlConnection) -> None:
    stored = _stored(con)
    rgb = [p.astype(np.float64) / 255 for p in stored]
    for got, pixels in zip(
        _images(con, "ML.CONVERT_COLOR_SPACE(ML.DECODE_IMAGE(data), 'GRAYSCALE')"), stored, strict=True
    ):
        np.testing.assert_allclose(
            got[:, :, 0], np.asarray(Image.fromarray(pixels).convert("F")) / 255, atol=1e-6
        )
        assert got.shape[2] == 1
    for got, image in zip(
        _images(con, "ML.CONVERT_COLOR_SPACE(ML.DECODE_IMAGE(data), 'HSV')"), rgb, strict=True
    ):
        expected = np.array([colorsys.rgb_to_hsv(*p) for p in image.reshape(-1, 3)]).reshape(image.shape)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    for space in ("YIQ", "YUV"):
        for got, image in zip(
            _images(con, f"ML.CONVERT_COLOR_SPACE(ML.DECODE_IMAGE(data), '{space}')"), rgb, strict=True
        ):
            # Y is the luma; the matrix inverts back to the RGB pixels.
            np.testing.assert_allclose(got[:, :, 0], image @ [0.299, 0.587, 0.114], atol=1e-6)
            matrix = np.linalg.lstsq(image.reshape(-1, 3), got.reshape(-1, 3).astype(np.float64), rcond=None)[
                0
            ]
            back = got.reshape(-1, 3) @ np.linalg.inv(matrix)
            np.testing.assert_allclose(back, image.reshape(-1, 3), atol=1e-5)
    same = _images(con, "ML.CONVERT_COLOR_SPACE(ML.DECODE_IMAGE(data), 'RGB')")
    assert all(np.allclose(g, i, atol=1e-7) for g, i in zip(same, rgb, strict=True))


def test_convert_image_type_gives_back_the_stored_pixels(con: SqlConnection) -> None:
    got = _images(con, "ML.CONVERT_IMAGE_TYPE(ML.DECODE_IMAGE(data))")
    for image, pixels in zip(got, _stored(con), strict=True):
        assert image.dtype.kind == "i" and np.array_equal(image, pixels)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "ML.CONVERT_COLOR_SPACE(ML.DECODE_IMAGE(data), 'HSV')",
            r"ML.CONVERT_COLOR_SPACE: row 0 has 1 channels; it converts RGB images \(3\)",
        ),
        (
            "ML.CONVERT_COLOR_SPACE(ML.DECODE_IMAGE(data), 'LAB')",
            r"ML.CONVERT_COLOR_SPACE: unknown color space 'LAB'; use one of RGB, GRAYSCALE, HSV, YIQ, YUV",
        ),
        (
            "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 0, 4, FALSE)",
            r"ML.RESIZE_IMAGE: row 0: target height and width must be at least 1, got 0 x 4",
        ),
        (
            "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 4, 4)",
            r"ML.RESIZE_IMAGE takes image, target_height, target_width, preserve_aspect_ratio",
        ),
    ],
)
def test_image_function_errors(con: SqlConnection, expression: str, message: str) -> None:
    with pytest.raises(SqlError, match=r"^statement 1: " + message):
        con.fetch(con.run_script(f"SELECT {expression} FROM ds.images WHERE uri LIKE '%gray%'"))


def test_ml_predict_over_resized_decoded_images_decodes_in_the_model_call(
    digits_example: Path, tmp_path: Path
) -> None:
    files = digits.write_pngs(str(tmp_path / "pngs"), 40, 56)
    with inferline.sql.connect() as con:
        con.sql(
            f"CREATE MODEL ds.digits OPTIONS(model_type='pytorch', "
            f"model_path='{digits_example / 'models' / 'digits-1.pts'}');"
            f"CREATE EXTERNAL TABLE ds.pngs OPTIONS(uris=['{Path(files[0]).parent}/*.png'], "
            "object_metadata='SIMPLE')"
        )
        query = (
            "SELECT uri, predicted_label, image FROM ML.PREDICT(MODEL ds.digits, (SELECT uri, "
            "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 28, 28, FALSE) AS image FROM ds.pngs)) ORDER BY uri"
        )
        (translated,) = bigquery.translate(query, con)
        assert "__inferline_blob" in translated and "resize_image(" not in translated.lower()
        fused = con.sql(query)
        assert fused is not None
        con.sql(
            "CREATE TABLE resized AS SELECT uri, "
            "ML.RESIZE_IMAGE(ML.DECODE_IMAGE(data), 28, 28, FALSE) AS image FROM ds.pngs"
        )
        unfused = con.sql(
            "SELECT uri, predicted_label, image FROM ML.PREDICT(MODEL ds.digits, TABLE resized) ORDER BY uri"
        )
        assert unfused is not None
        got, expected = fused.fetchall(), unfused.fetchall()
        assert got == expected and len(got) == 40
        assert np.asarray(got[0][2]).shape == (28, 28, 1)
