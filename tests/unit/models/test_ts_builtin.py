"""inferline's built-in `image_classifier` transform equals TorchServe's transform chain."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inferline.models.ts_builtin import CROP, MEAN, STD, transform
from inferline.models.ts_compat import CenterCrop, Compose, Normalize, Resize, ToTensor

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("size", [(64, 64), (40, 30), (300, 200)])
def test_transform_matches_resize_crop_normalise(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    chain = Compose([Resize(256), CenterCrop(CROP), ToTensor(), Normalize(MEAN.tolist(), STD.tolist())])
    expected = chain(image).numpy()
    got = transform(image)
    assert got.shape == (3, CROP, CROP) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
