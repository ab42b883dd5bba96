"""inferline's built-in `image_classifier` transform equals TorchServe's transform chain."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inferline.models.ts_builtin import CROP, MEAN, STD, crop_plan, rgb_pixels, transform
from inferline.models.ts_compat import CenterCrop, Compose, Normalize, Resize, ToTensor
from tests.lazy import requires

pytestmark = requires("torch")  # ToTensor makes torch tensors


# (64, 64), (300, 200), (512, 384): the crop alone is resampled (dyadic scales); (40, 30) and
# (8, 400) (a 256 x 12800 resize) are resized whole; (256, 300) is only cropped.
@pytest.mark.parametrize("size", [(64, 64), (40, 30), (300, 200), (512, 384), (8, 400), (256, 300)])
def test_transform_matches_resize_crop_normalise(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    chain = Compose([Resize(256), CenterCrop(CROP), ToTensor(), Normalize(MEAN.tolist(), STD.tolist())])
    expected = chain(image).numpy()
    got = transform(image)
    assert got.shape == (3, CROP, CROP) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)  # bit for bit, whichever way it was resampled
    into = np.zeros((2, 3, CROP, CROP), dtype=np.float32)
    row = into[1]
    assert transform(image, out=row) is row
    np.testing.assert_array_equal(row, expected)
    assert not into[0].any()


def test_only_the_crop_is_resampled_when_that_gives_the_same_pixels() -> None:
    assert crop_plan(64, 64)[2] == (4.0, 4.0, 60.0, 60.0)  # 64 -> 256: scale 1/4
    assert crop_plan(300, 200)[2] == (62.5, 12.5, 237.5, 187.5)  # 300 x 200 -> 384 x 256: 25/32
    assert crop_plan(40, 30)[2] is None  # 40 -> 341: not a dyadic scale
    assert crop_plan(8, 400)[2] is None  # resized to 256 x 12800: over BOX_MAX_SIDE
    assert crop_plan(256, 300) == ((256, 300), (16.0, 38.0, 240.0, 262.0), None)  # only cropped


def test_rgb_pixels_reads_pillows_memory_and_falls_back_to_a_copy() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).crop((0, 0, 20, 30))  # Pillow's own memory, as transform's
    exported = rgb_pixels(image)
    assert exported.shape == (30, 20, 4)  # Pillow's RGBX, no copy
    np.testing.assert_array_equal(exported[:, :, :3], pixels)
    mapped = Image.fromarray(pixels[:, :, 0])  # maps the numpy buffer: never exported
    assert mapped.readonly
    np.testing.assert_array_equal(rgb_pixels(mapped), pixels[:, :, 0])
    large = Image.new("RGB", (5000, 5000), (1, 2, 3))  # several memory blocks: copied
    assert rgb_pixels(large).shape == (5000, 5000, 3)
