"""Image decoding and the `kind: images` source, on images drawn with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inferline.engine.tensors import tensor_shape
from inferline.errors import InputError, SpecError
from inferline.io.images import ImageSettings, ImagesSource, decode_image
from inferline.pipeline import SourceSpec


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _rgb(height: int = 6, width: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_decode_scales_normalises_and_lays_out_channels_first() -> None:
    pixels = _rgb()
    settings = ImageSettings(mode="RGB", scale=255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    got = decode_image(_png(pixels), settings)
    expected = ((pixels / 255.0 - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5]).transpose(2, 0, 1)
    assert got.dtype == np.float32
    assert got.shape == (3, 6, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_decode_nhwc_grayscale_resized_matches_pillow() -> None:
    pixels = _rgb()
    got = decode_image(_png(pixels), ImageSettings(mode="L", resize=(4, 5), layout="NHWC"))
    expected = np.asarray(Image.fromarray(pixels).convert("L").resize((5, 4), Image.Resampling.BILINEAR))
    assert got.shape == (4, 5, 1)
    np.testing.assert_array_equal(got[:, :, 0], expected.astype(np.float32))


def test_settings_from_spec_accepts_a_single_resize_number() -> None:
    spec = SourceSpec(kind="images", path="x/*.png", resize=[32], mode="L", layout="nhwc", scale=255)
    settings = ImageSettings.from_spec(spec)
    assert settings.resize == (32, 32)
    assert settings.shape == (32, 32, 1)


def test_corrupt_bytes_raise_a_one_line_input_error() -> None:
    with pytest.raises(InputError, match="^cannot decode image: cannot identify image file"):
        decode_image(b"this is text, not an image", ImageSettings())
    with pytest.raises(InputError, match="^cannot decode image: "):
        decode_image(b"\x89PNG\r\n\x1a\ntruncated", ImageSettings())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "CMYK"}, r"source.mode: 'CMYK' is not supported; expected L or RGB"),
        ({"layout": "CHW"}, r"source.layout: 'CHW' is not supported; expected NCHW or NHWC"),
        ({"resize": (0, 3)}, r"source.resize: expected \[height, width\] of positive numbers"),
        ({"scale": 0}, r"source.scale: must not be 0"),
        ({"mean": (0.1, 0.2)}, r"source.mean: expected 1 or 3 values for mode RGB, got 2"),
        ({"std": (0.0,)}, r"source.std: values must not be 0"),
    ],
)
def test_bad_settings_are_spec_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        ImageSettings(**options)  # type: ignore[arg-type]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "9_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    return folder


def _read_all(source: ImagesSource) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
    keys: list[str] = []
    pixels: list[np.ndarray] = []
    dead: list[tuple[str, str]] = []
    source.open()
    try:
        for batch in source.batches():
            keys.extend(batch.keys.to_pylist())
            field = batch.data.schema.field("image")
            shape = tensor_shape(field)
            assert shape is not None
            flat = batch.data.column("image").flatten().to_numpy()
            pixels.extend(flat.reshape((-1, *shape)))
            dead.extend((d.key, d.error) for d in batch.dead)
    finally:
        source.close()
    return keys, pixels, dead


def test_source_decodes_every_image_and_dead_letters_the_corrupt_one(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    settings = ImageSettings(mode="L", scale=255)
    keys, pixels, dead = _read_all(ImagesSource(str(folder / "*.png"), settings, batch_rows=2, workers=2))
    assert [Path(k).name for k in keys] == [f"{i}.png" for i in range(5)]
    for key, got in zip(keys, pixels, strict=True):
        np.testing.assert_array_equal(got, decode_image(Path(key).read_bytes(), settings))
    assert len(dead) == 1
    key, error = dead[0]
    assert key.endswith("9_corrupt.png")
    assert error.startswith(key + ": cannot decode image")


def test_source_columns_are_uri_size_and_a_tensor(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "9_corrupt.png").unlink()
    source = ImagesSource(str(folder / "*.png"), ImageSettings(mode="RGB", resize=(4, 6)))
    source.open()
    batch = next(iter(source.batches()))
    assert batch.data.schema.names == ["uri", "width", "height", "image"]
    assert batch.data.column("width").to_pylist() == [8] * 5
    assert tensor_shape(batch.data.schema.field("image")) == (3, 4, 6)
    assert batch.keys.to_pylist() == batch.data.column("uri").to_pylist()
    assert source.progress_total() == sum(p.stat().st_size for p in folder.glob("*.png"))


def test_images_of_another_size_need_resize(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(folder / "8_odd.png")
    _, pixels, dead = _read_all(ImagesSource(str(folder / "*.png"), ImageSettings(mode="L")))
    assert len(pixels) == 5
    odd = [e.split(": ", 1)[1] for k, e in dead if k.endswith("8_odd.png")]
    assert odd == ["image is 5x7, expected 8x8 like the first image; set source.resize: [height, width]"]


def test_large_images_get_smaller_batches() -> None:
    source = ImagesSource("x/*.jpg", ImageSettings(resize=(512, 512)), batch_rows=4096)
    assert source.batch_rows == (64 << 20) // (4 * 3 * 512 * 512)


def test_no_matching_files_is_an_input_error(tmp_path: Path) -> None:
    source = ImagesSource(str(tmp_path / "*.png"))
    with pytest.raises(InputError, match=r"source path .*\*\.png: no files match"):
        source.open()


def test_source_reads_an_fsspec_uri_and_keys_rows_by_it() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe(f"/bench-imgs/{i}.png", _png(np.full((4, 4), i * 50, dtype=np.uint8)))
    try:
        keys, pixels, dead = _read_all(ImagesSource("memory://bench-imgs/*.png", ImageSettings(mode="L")))
    finally:
        fs.rm("/bench-imgs", recursive=True)
    assert keys == [f"memory:///bench-imgs/{i}.png" for i in range(3)]
    assert [float(p.max()) for p in pixels] == [0.0, 50.0, 100.0]
    assert dead == []
