"""User inputs of the inference API: images of any common kind and free-form instructions."""
import os
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from visionllm.instructions import RegionError, check_regions

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]

# Decoding a huge image at full size costs memory for nothing: the model resizes it to at most
# a few hundred pixels anyway. PIL's draft/reduce shrink while decoding where the format allows.
MAX_DECODE_SIDE = 4096


class InputError(ValueError):
    """A bad image or instruction given to the inference API (one-line message)."""


def _check_source(image: ImageInput) -> None:
    """One-line :class:`InputError` for an input that is no image: a missing file, an empty array
    or one of another shape, another type (an unreadable file is found when it is read)."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(os.fspath(image)):
            raise InputError(f"image file not found: {os.fspath(image)}")
    elif isinstance(image, np.ndarray):
        if image.size == 0:
            raise InputError("empty image array")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise InputError(f"unsupported image array shape {image.shape}; expected HxW, HxWx3 or HxWx4")
    elif not isinstance(image, Image.Image):
        raise InputError(f"unsupported image type {type(image).__name__}; give a path, a numpy array or a PIL image")


def _unreadable(path: str, err: Exception) -> InputError:
    return InputError(f"cannot read image {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def _to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        array = (array.astype(np.float64) / 65535.0 * 255.0).round()
    elif array.dtype.kind == "f":
        array = np.clip(array, 0.0, 1.0) * 255.0 if array.max(initial=0) <= 1.0 else np.clip(array, 0, 255)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    array = array.astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        # Composite on white so transparent regions do not turn black.
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = (array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _pil_to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if max(image.size) > MAX_DECODE_SIDE:
        factor = max(image.size) / MAX_DECODE_SIDE
        image.draft("RGB", (int(image.width / factor), int(image.height / factor)))
        if max(image.size) > MAX_DECODE_SIDE:
            image = image.reduce(int(np.ceil(max(image.size) / MAX_DECODE_SIDE)))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return _to_rgb_uint8(np.asarray(image).astype(np.uint16 if image.mode.startswith("I;16") else np.int64).clip(0, 65535).astype(np.uint16))
    if image.mode in ("RGBA", "LA", "P"):
        return _to_rgb_uint8(np.asarray(image.convert("RGBA")))
    return _to_rgb_uint8(np.asarray(image.convert("RGB")))


def original_size(image: ImageInput) -> tuple:
    """``(height, width)`` of the image as given (before any reduction while decoding), read from
    a file's header; :class:`InputError` as :func:`load_image` gives it for what is no image."""
    _check_source(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(os.fspath(image)) as opened:
                return opened.height, opened.width
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise _unreadable(os.fspath(image), err) from None
    if isinstance(image, Image.Image):
        return image.height, image.width
    return tuple(image.shape[:2])


def load_image(image: ImageInput) -> np.ndarray:
    """Any supported image input → RGB ``uint8`` array ``[H, W, 3]``.

    Accepts a path, a numpy array (gray, RGB, RGBA; uint8, uint16 or float in [0, 1]) or a PIL
    image. Raises :class:`InputError` with a one-line message for a missing or unreadable file.
    """
    _check_source(image)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with Image.open(path) as opened:
                return _pil_to_rgb_uint8(opened)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise _unreadable(path, err) from None
    if isinstance(image, Image.Image):
        return _pil_to_rgb_uint8(image)
    return _to_rgb_uint8(image)


def parse_regions(instruction: str, regions, image_size: tuple) -> np.ndarray:
    """The ``regions`` of the API (``[[x1, y1, x2, y2], ...]`` in pixels of the input image, one per
    ``<region>`` of ``instruction``, or None) as float32 ``[R, 4]``, checked against the image's
    ``(height, width)``. Raises :class:`InputError` (one line) for malformed boxes, boxes outside
    the image or without area, and counts that differ from the placeholders."""
    try:
        return check_regions(instruction, regions, (image_size[1], image_size[0]))
    except RegionError as err:
        raise InputError(str(err)) from None
