"""TorchServe's built-in `image_classifier` handler, without torchvision.

Same steps and answer as TorchServe's: each request's image (`data` or `body`: bytes, or
base64 text) is resized so its short side is 256, centre-cropped to 224x224, scaled to
[0, 1] and normalised with ImageNet's mean and std; the model's logits go through softmax
and each request answers its top 5 as `{label: probability}`, labels from the archive's
`index_to_name.json` (`{"0": "cat"}` or `{"0": ["n0212", "cat"]}`; the class index otherwise).

The model is the archive's TorchScript `serializedFile`, or its `modelFile` class with the
serialized state_dict (eager mode), as TorchServe's `BaseHandler.initialize` loads them.

Example:
    >>> classifier = ImageClassifier()
    >>> classifier.topk
    5
"""

from __future__ import annotations

import base64
import functools
import importlib
import io
import json
import math
import os
from typing import Any

import numpy as np
import pyarrow as pa

from inferline.errors import ModelError, require

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE = 256
# (x / 255 - mean) / std of every uint8 value per channel, in float32 as computed per pixel.
NORMALISED = ((np.arange(256, dtype=np.float32) / 255.0)[None, :] - MEAN[:, None]) / STD[:, None]
CROP = 224
BOX_MAX_SIDE = 8192  # longer resized sides are resized whole (see `resized_crop`)


class ImageClassifier:
    """`initialize(context)` loads the model and labels; `handle(data, context)` answers a batch."""

    topk = 5

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, Any] | None = None
        self.where = "image_classifier"

    def initialize(self, context: Any) -> None:
        torch: Any = require("torch", "torch")
        model_dir = context.system_properties["model_dir"]
        model = context.manifest["model"]
        self.where = f"model archive {model.get('modelName', model_dir)}"
        serialized = model.get("serializedFile")
        if not serialized:
            raise ModelError(f"{self.where}: its manifest names no serializedFile")
        path = os.path.join(model_dir, serialized)
        if model.get("modelFile"):
            self.model = _eager(torch, model_dir, str(model["modelFile"]), path, self.where)
        else:
            self.model = torch.jit.load(path, map_location="cpu")
        self.model.eval()
        self.mapping = read_index_to_name(model_dir, self.where)

    def handle(self, data: list[Any], context: Any) -> list[dict[str, float]]:
        torch: Any = require("torch", "torch")
        # Each image is normalised straight into its row of the batch: no per-image array to stack.
        batch = np.empty((len(data), 3, CROP, CROP), dtype=np.float32)
        for row, out in zip(data, batch, strict=True):
            self.preprocess_one(row, out=out)
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch))
            probabilities = torch.softmax(logits, dim=1)
            k = min(self.topk, probabilities.shape[1])
            values, classes = torch.topk(probabilities, k, dim=1)
        return [
            {self.label(int(c)): float(p) for p, c in zip(row_p, row_c, strict=True)}
            for row_p, row_c in zip(values.tolist(), classes.tolist(), strict=True)
        ]

    def label(self, index: int) -> str:
        if self.mapping is None:
            return str(index)
        value = self.mapping.get(str(index), str(index))
        return str(value[-1]) if isinstance(value, list) and value else str(value)

    def preprocess_one(self, row: Any, *, out: np.ndarray | None = None) -> np.ndarray:
        """One request's image as a (3, 224, 224) float32 array (written into `out` if given)."""
        from PIL import Image

        image = row.get("data") or row.get("body") if isinstance(row, dict) else row
        if isinstance(image, str):
            image = base64.b64decode(image)
        if not isinstance(image, bytes | bytearray):
            raise ModelError(f"{self.where}: expected an image (bytes or base64 text) in data or body")
        with Image.open(io.BytesIO(image)) as opened:
            # An RGB image needs no conversion (convert would only copy it).
            return transform(opened if opened.mode == "RGB" else opened.convert("RGB"), out=out)


def transform(image: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Resize(256), CenterCrop(224), ToTensor, Normalize(ImageNet) as torchvision does them.

    The values are written into `out` ((3, 224, 224) float32, e.g. a row of a batch) when given.
    """
    pixels = rgb_pixels(resized_crop(image))
    if out is None:
        out = np.empty((3, CROP, CROP), dtype=np.float32)
    for channel in range(3):  # a table look-up per value, not four passes over floats
        # uint8 indices never leave the 256-entry table; "wrap" is numpy's cheapest mode here.
        np.take(NORMALISED[channel], pixels[:, :, channel], out=out[channel], mode="wrap")
    return out


def rgb_pixels(image: Any) -> np.ndarray:
    """An RGB image's pixels as a (height, width, 3 or 4) uint8 array, R, G, B first.

    Pillow keeps RGB as RGBX and exports that memory through Arrow without a copy (a quarter
    of the normalising time at 224 x 224); `np.asarray` copies it out through `tobytes`, and
    stays the way for anything else: another mode, an image mapping someone else's buffer
    (`readonly`; Pillow 12's export crashes on one made by `Image.fromarray`), an image in
    several memory blocks (large ones), a Pillow without the export.
    """
    if image.mode != "RGB" or getattr(image, "readonly", True):
        return np.asarray(image)
    try:
        exported = pa.array(image)
    except (AttributeError, TypeError, ValueError, pa.ArrowException):
        return np.asarray(image)
    width, height = image.size
    kind = exported.type
    if not pa.types.is_fixed_size_list(kind) or kind.list_size != 4 or len(exported) != width * height:
        return np.asarray(image)
    values: np.ndarray = exported.values.to_numpy(zero_copy_only=True)
    return values.reshape(height, width, 4)


def resized_crop(image: Any) -> Any:
    """`image.resize(short side 256, BILINEAR).crop(centre 224 x 224)`, pixel for pixel."""
    from PIL import Image

    size, crop, box = crop_plan(*image.size)
    if box is not None:
        return image.resize((CROP, CROP), Image.Resampling.BILINEAR, box=box)
    if tuple(image.size) == size:
        return image.crop(crop)
    return image.resize(size, Image.Resampling.BILINEAR).crop(crop)


Box = tuple[float, float, float, float]


@functools.lru_cache(maxsize=256)
def crop_plan(width: int, height: int) -> tuple[tuple[int, int], Box, Box | None]:
    """The resized size, the crop in it and, when it gives the same pixels, the crop's box in
    the original image for Pillow to resample only the crop (a fifth of the work at 256 -> 224).

    The box gives the same result bit for bit when each axis's scale (input / output pixels)
    is a dyadic fraction (64/256, 480/256, 200/256...) and the box's edges are exact C floats
    (Pillow's type for them): every sample position and filter weight is then the same exact
    double either way (checked on 700 random sizes). Other scales (640/341) can move a pixel by
    one level, and so can resized sides over ~25,000 pixels (an image 100 times taller than wide)
    for a reason not found in Pillow's source: those are resized whole and cropped, as
    torchvision does.
    """
    if width <= height:
        size = (RESIZE, int(RESIZE * height / width))
    else:
        size = (int(RESIZE * width / height), RESIZE)
    left = int(round((size[0] - CROP) / 2.0))
    top = int(round((size[1] - CROP) / 2.0))
    crop = (float(left), float(top), float(left + CROP), float(top + CROP))
    if (width, height) == size or max(size) > BOX_MAX_SIDE:
        return size, crop, None
    edges = []
    for edge, original, resized in zip(crop, (width, height) * 2, size * 2, strict=True):
        shared = math.gcd(original, resized)
        numerator, denominator = int(edge) * (original // shared), resized // shared
        if denominator & (denominator - 1) or numerator >= 2**24:  # not dyadic, or not a C float
            return size, crop, None
        edges.append(numerator / denominator)
    return size, crop, (edges[0], edges[1], edges[2], edges[3])


def read_index_to_name(model_dir: str, where: str) -> dict[str, Any] | None:
    """`index_to_name.json` of the archive (`{"0": "label"}`), or None when it has none."""
    path = os.path.join(model_dir, "index_to_name.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            mapping = json.load(handle)
    except ValueError as exc:
        raise ModelError(f"{where}: index_to_name.json is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict):
        raise ModelError(f'{where}: index_to_name.json must map class indexes to labels, like {{"0": "cat"}}')
    return mapping


def _eager(torch: Any, model_dir: str, model_file: str, weights: str, where: str) -> Any:
    """The one `nn.Module` class of `modelFile`, with the serialized state_dict loaded."""
    module_name = os.path.splitext(os.path.basename(model_file))[0]
    module = importlib.import_module(module_name)  # model_dir is on sys.path while initialising
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, torch.nn.Module)
        and value.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise ModelError(
            f"{where}: {model_file} must define exactly one nn.Module class, found {len(classes)}"
        )
    model = classes[0]()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model
