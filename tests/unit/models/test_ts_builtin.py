"""inferline's built-in `image_classifier` transform equals TorchServe's transform chain."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inferline.models.ts_builtin import CROP, MEAN, STD, transform
from inferline.models.ts_compat import CenterCrop, Compose, Normalize, Resize, ToTensor

torch = pytest.importorskip("torch")


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
