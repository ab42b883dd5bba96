"""Stand-ins for torchvision/captum while a TorchServe handler is imported, gone afterwards."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from PIL import Image

from inferline.errors import ModelError
from inferline.models.ts_compat import stand_ins
from tests.lazy import requires

pytestmark = requires("torch")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_transforms_follow_torchvision_and_leave_no_trace() -> None:
    with stand_ins():
        from captum.attr import IntegratedGradients
        from torchvision import transforms

        resized = transforms.Resize(4)(Image.new("RGB", (8, 6), (255, 0, 0)))
        pipeline = transforms.Compose(
            [transforms.CenterCrop(2), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        )
        tensor = pipeline(resized)
        explainer = IntegratedGradients(object())
    assert resized.size == (5, 4)  # the short side becomes 4, as torchvision's Resize(int)
    assert tuple(tensor.shape) == (3, 2, 2) and tensor[0].eq(1.0).all() and tensor[1].eq(-1.0).all()
    assert "torchvision" not in sys.modules and "captum.attr" not in sys.modules
    assert importlib.util.find_spec("torchvision") is None
    with pytest.raises(ModelError, match=r"explanations need captum, which is not installed"):
        explainer.attribute(tensor)
