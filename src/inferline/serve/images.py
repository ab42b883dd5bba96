"""Image bodies for any protocol: decoded with the settings saved in a model's store metadata.

TorchServe's `/predictions` (an `image/*` or raw body, multipart files), KServe v2 `BYTES`
inputs, Vertex AI's instances and POST /models' image parameters all go through here, so an
image gets the same pixels whichever door it came in by.

Example:
    >>> rows = decode_image_body(png_bytes, served)  # doctest: +SKIP
    >>> rows.shape  # doctest: +SKIP
    (1, 1, 28, 28)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.errors import InferlineError
from inferline.serve.http import ApiError, bad_request
from inferline.serve.models import ServedVersion

IMAGE_KEYS = ("resize", "mode", "scale", "mean", "std", "layout")


def decode_image_body(body: bytes, served: ServedVersion) -> np.ndarray:
    """One image body as a one-row batch, decoded with the model's saved image settings.

    The size is read from the image header first: an image over `served.max_image_pixels`
    (`--max-image-pixels`) is refused before anything is decoded (a 0.5 MB PNG can decode to gigabytes).
    """
    try:
        from inferline.io.images import decode_image, image_size
    except ImportError as exc:  # the images module or Pillow is missing
        raise ApiError(
            415, "UnsupportedMediaType", f"model {served.model_id}: image bodies need Pillow ({exc})"
        ) from exc
    settings = image_settings(served)
    if not body:
        raise bad_request(f"model {served.model_id}: empty image body")
    try:
        width, height = image_size(body)
        max_pixels = served.max_image_pixels
        if width * height > max_pixels:
            raise ApiError(
                413,
                "PayloadTooLarge",
                f"model {served.model_id}: image of {width}x{height} pixels ({width * height / 1e6:.1f} Mpx) "
                f"exceeds the limit of {max_pixels} pixels; send a smaller image or start the server "
                "with a larger --max-image-pixels",
            )
        image = np.asarray(decode_image(body, settings))
    except InferlineError as exc:
        if isinstance(exc, ApiError):
            raise
        raise bad_request(f"model {served.model_id}: {exc}") from exc
    return served.check_rows(image[np.newaxis, ...], input_name="image")


def image_settings(served: ServedVersion) -> Any:
    """`ImageSettings` from the store metadata (`image: {...}` or top-level keys)."""
    meta = served.metadata.get("image", served.metadata)
    try:
        return settings_of(meta if isinstance(meta, dict) else {})
    except (InferlineError, TypeError, ValueError) as exc:
        raise ApiError(
            500, "ModelConfigError", f"model {served.model_id}: bad image settings in its metadata ({exc})"
        ) from exc


def settings_of(meta: dict[str, Any]) -> Any:
    """`ImageSettings` from `resize`, `mode`, `scale`, `mean`, `std`, `layout` values."""
    from inferline.io.images import ImageSettings

    values: dict[str, Any] = {key: meta[key] for key in IMAGE_KEYS if meta.get(key) is not None}
    if "resize" in values:
        resize = [int(v) for v in values["resize"]]
        values["resize"] = tuple(resize * 2 if len(resize) == 1 else resize)
    for key in ("mean", "std"):
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    if "layout" in values:
        values["layout"] = str(values["layout"]).upper()
    return ImageSettings(**values)


def has_image_settings(served: ServedVersion) -> bool:
    """Whether the model's metadata holds image settings (so it takes encoded images)."""
    meta = served.metadata.get("image", served.metadata)
    return isinstance(meta, dict) and any(key in meta for key in IMAGE_KEYS)
