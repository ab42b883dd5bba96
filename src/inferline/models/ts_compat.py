"""Stand-ins for what TorchServe's handlers import from torchvision and captum.

TorchServe's `VisionHandler`, `ImageClassifier`, `ImageSegmenter`, `ObjectDetector` and
`TextClassifier` (and custom handlers subclassing them) import `torchvision.transforms` and
`captum.attr` at import time; this machine's PyPI has only a CUDA torchvision, and captum only
serves explanations. `stand_ins()` puts small modules under those names while a handler is
imported and initialised, when the real packages are not installed, and removes them after,
so no other library mistakes them for the real ones (the handler keeps what it imported).

The transforms are the ones TorchServe's handlers compose, with torchvision's semantics on
Pillow images: `Resize` (an int matches the short side), `CenterCrop`, `ToTensor` (CHW floats
in [0, 1]), `Normalize`, `Grayscale`, `Compose`. The captum classes only exist: asking one for
an explanation raises an error that names the missing package.

Example:
    >>> with stand_ins():  # doctest: +SKIP
    ...     from ts.torch_handler.image_segmenter import ImageSegmenter
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from inferline.errors import ModelError

VERSION = "0.0.0+inferline"  # no torchvision release: handlers that compare versions take the old path


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any) -> Any:
        for transform in self.transforms:
            image = transform(image)
        return image


class Resize:
    """An int resizes the short side to it (keeping the aspect ratio); (h, w) resizes to that."""

    def __init__(self, size: int | Sequence[int], interpolation: Any = None, **_: Any) -> None:
        self.size = size

    def __call__(self, image: Any) -> Any:
        from PIL import Image

        width, height = _pil(image, "Resize").size
        if isinstance(self.size, int) or len(self.size) == 1:
            short = self.size if isinstance(self.size, int) else int(self.size[0])
            if width <= height:
                size = (short, int(short * height / width))
            else:
                size = (int(short * width / height), short)
        else:
            size = (int(self.size[1]), int(self.size[0]))
        return image.resize(size, Image.Resampling.BILINEAR)


class CenterCrop:
    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))

    def __call__(self, image: Any) -> Any:
        width, height = _pil(image, "CenterCrop").size
        crop_h, crop_w = self.size
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        return image.crop((left, top, left + crop_w, top + crop_h))


class Grayscale:
    def __init__(self, num_output_channels: int = 1) -> None:
        self.channels = num_output_channels

    def __call__(self, image: Any) -> Any:
        gray = _pil(image, "Grayscale").convert("L")
        return gray if self.channels == 1 else gray.convert("RGB")


class ToTensor:
    """A Pillow image or HWC uint8 array as a CHW float tensor in [0, 1]."""

    def __call__(self, image: Any) -> Any:
        import torch

        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, np.newaxis]
        scaled = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
        return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, tensor: Any) -> Any:
        import torch

        mean = torch.tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std


def _pil(image: Any, name: str) -> Any:
    if not hasattr(image, "resize") or not hasattr(image, "size") or callable(image.size):
        raise ModelError(
            f"transforms.{name} (inferline's stand-in for torchvision) takes Pillow images; "
            f"got {type(image).__name__}"
        )
    return image


class _Explainer:
    """captum's attribution classes: they can be made, not asked (explanations need captum)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def _missing(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelError("explanations need captum, which is not installed (pip install captum)")

    attribute = generate_reference = _missing


class IntegratedGradients(_Explainer):
    pass


class LayerIntegratedGradients(_Explainer):
    pass


class TokenReferenceBase(_Explainer):
    pass


def _modules() -> dict[str, types.ModuleType]:
    made: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("torchvision") is None:
        transforms = types.ModuleType("torchvision.transforms")
        for cls in (Compose, Resize, CenterCrop, Grayscale, ToTensor, Normalize):
            setattr(transforms, cls.__name__, cls)
        vision = types.ModuleType("torchvision")
        vision.__version__ = VERSION  # type: ignore[attr-defined]
        vision.transforms = transforms  # type: ignore[attr-defined]
        made.update({"torchvision": vision, "torchvision.transforms": transforms})
    if importlib.util.find_spec("captum") is None:
        attr = types.ModuleType("captum.attr")
        for explainer in (IntegratedGradients, LayerIntegratedGradients, TokenReferenceBase):
            setattr(attr, explainer.__name__, explainer)
        captum = types.ModuleType("captum")
        captum.attr = attr  # type: ignore[attr-defined]
        made.update({"captum": captum, "captum.attr": attr})
    return made


@contextlib.contextmanager
def stand_ins() -> Iterator[None]:
    """torchvision/captum stand-ins in `sys.modules` for the duration (only those not installed).

    Callers hold the handler import lock, so no other thread imports meanwhile.
    """
    added = {name: module for name, module in _modules().items() if name not in sys.modules}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
