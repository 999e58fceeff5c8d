"""The one polygon rasteriser of the package: COCO polygons → run-length encoding or mask.

Every place that turns polygons into pixels (dataset generation, the metrics' mask results,
pictures) goes through here, so they agree on which pixels a polygon covers (pycocotools'
rule, the one COCO's ground truth and ``annToMask`` use).
"""
from typing import Sequence, Union

import numpy as np
from pycocotools import mask as mask_utils

Polygon = Union[Sequence[float], np.ndarray]


def _flat(part: Polygon) -> list:
    """One polygon as the flat ``[x1, y1, x2, y2, ...]`` float list pycocotools reads.

    A polygon of one or two points is padded with its last point to three (a degenerate
    polygon): pycocotools would read four numbers as a box ``[x, y, w, h]`` instead.
    """
    flat = np.asarray(part, dtype=np.float64).reshape(-1)
    if flat.size % 2 or flat.size == 0:
        raise ValueError(f"a polygon is a list of (x, y) points, got {flat.size} numbers")
    points = flat.reshape(-1, 2)
    if len(points) < 3:
        points = np.concatenate([points, np.repeat(points[-1:], 3 - len(points), axis=0)])
    return points.reshape(-1).tolist()


def polygon_rle(parts: Sequence[Polygon], height: int, width: int) -> dict:
    """The run-length encoding (``counts`` as bytes) of the union of one instance's polygon
    ``parts`` (each flat ``[x1, y1, ...]`` or ``[K, 2]``, in pixels) on a ``height x width`` image."""
    if len(parts) == 0:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects([_flat(p) for p in parts], height, width))


def polygon_mask(parts: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """The boolean ``[height, width]`` mask of the union of one instance's polygon ``parts``."""
    return mask_utils.decode(polygon_rle(parts, height, width)).astype(bool)
