"""Regions in an instruction: ``<region>`` placeholders, their boxes and their location tokens.

A region is a box ``(x1, y1, x2, y2)`` in pixels of an image. Each ``<region>`` of an
instruction takes the next box of the sample's list, in order. Inside the LLM a region is written
with the same location tokens as the outputs (:class:`LocationCodec`), as offsets from the
image's top-left corner (reference point ``(0, 0)``): an input has no slot whose image token
could serve as reference, and from the corner the bins ``half .. 2 * half`` cover the image with
the outputs' resolution (``W / half`` pixels per bin).

Polygons are not accepted as regions (boxes only).
"""
import re
from typing import List, Sequence, Tuple

import numpy as np
import torch

from .location_codec import LocationCodec

REGION_PLACEHOLDER = "<region>"
PLACEHOLDER_PATTERN = re.compile(r"(<image>|<region>)")


class RegionError(ValueError):
    """Regions that do not fit their instruction or image (one-line message)."""


def count_regions(text: str) -> int:
    """Number of ``<region>`` placeholders in an instruction."""
    return text.count(REGION_PLACEHOLDER)


def split_placeholders(text: str) -> List[str]:
    """``text`` cut at every ``<image>`` and ``<region>``, the placeholders kept as pieces of their
    own (``re.split`` with a group): text, placeholder, text, ..., text."""
    return PLACEHOLDER_PATTERN.split(text)


def check_regions(instruction: str, regions, image_wh: Tuple[float, float]) -> np.ndarray:
    """The boxes of ``regions`` as float32 ``[R, 4]`` after checking them against the instruction
    and an image of ``image_wh = (width, height)`` pixels.

    Raises :class:`RegionError` when a box is not four finite numbers, lies (partly) outside the
    image, has zero or negative width or height, when the number of boxes differs from the
    number of ``<region>`` placeholders, or when boxes come with an instruction without any.
    """
    expected = count_regions(instruction)
    boxes = [] if regions is None else regions
    if isinstance(boxes, (np.ndarray, torch.Tensor)):
        boxes = boxes.tolist()
    if not isinstance(boxes, (list, tuple)):
        raise RegionError(f"regions must be a list of [x1, y1, x2, y2] boxes, got {type(regions).__name__}")
    if len(boxes) and not isinstance(boxes[0], (list, tuple, np.ndarray, torch.Tensor)):
        raise RegionError("regions must be a list of boxes: write [[x1, y1, x2, y2]] for one region")
    if expected == 0 and len(boxes):
        raise RegionError(f"{len(boxes)} region(s) given but the instruction has no {REGION_PLACEHOLDER} "
                          f"placeholder to put them at")
    if len(boxes) != expected:
        raise RegionError(f"the instruction has {expected} {REGION_PLACEHOLDER} placeholder(s) but "
                          f"{len(boxes)} region(s) were given (one box per placeholder, in order)")
    width, height = float(image_wh[0]), float(image_wh[1])
    out = np.zeros((len(boxes), 4), np.float32)
    for i, box in enumerate(boxes):
        try:
            values = [float(v) for v in box]
        except (TypeError, ValueError):
            raise RegionError(f"region {i + 1} is not four numbers x1, y1, x2, y2: {box!r}") from None
        if len(values) != 4 or not all(np.isfinite(values)):
            raise RegionError(f"region {i + 1} is not four finite numbers x1, y1, x2, y2: {box!r}")
        x1, y1, x2, y2 = values
        if x2 <= x1 or y2 <= y1:
            raise RegionError(f"region {i + 1} {values} has zero or negative area (needs x1 < x2 and y1 < y2)")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise RegionError(f"region {i + 1} {values} lies outside the {width:g}x{height:g} image")
        out[i] = values
    return out


def region_bins(codec: LocationCodec, boxes: torch.Tensor, image_wh: Tuple[float, float]) -> torch.Tensor:
    """Boxes ``[R, 4]`` in pixels of an image of ``image_wh`` → location-bin indices ``[R, 4]``
    (x1, y1, x2, y2), written from the image's top-left corner."""
    corner = torch.zeros(boxes.shape[0], 2, dtype=torch.float64, device=boxes.device)
    return codec.encode_boxes(boxes, corner, tuple(float(v) for v in image_wh))


def region_boxes(codec: LocationCodec, bins: torch.Tensor, image_wh: Tuple[float, float]) -> torch.Tensor:
    """The inverse of :func:`region_bins`: bins ``[R, 4]`` → boxes ``[R, 4]`` in pixels."""
    corner = torch.zeros(bins.shape[0], 2, dtype=torch.float64, device=bins.device)
    return codec.decode_boxes(bins, corner, tuple(float(v) for v in image_wh))


def regions_of(sample_regions, num_expected: int) -> torch.Tensor:
    """A sample's ``regions`` metainfo (None, a list or an array of boxes) as float32 ``[R, 4]``;
    a count other than ``num_expected`` placeholders is a :class:`RegionError`."""
    boxes = torch.as_tensor(np.asarray([] if sample_regions is None else sample_regions, np.float32)).reshape(-1, 4)
    if boxes.shape[0] != num_expected:
        raise RegionError(f"the instruction has {num_expected} {REGION_PLACEHOLDER} placeholder(s) but the sample "
                          f"carries {boxes.shape[0]} region(s)")
    return boxes


def scale_regions(regions: Sequence, sx: float, sy: float) -> np.ndarray:
    """Boxes ``[R, 4]`` scaled by ``sx`` along x and ``sy`` along y (float32)."""
    return np.asarray(regions, np.float32).reshape(-1, 4) * np.asarray([sx, sy, sx, sy], np.float32)
