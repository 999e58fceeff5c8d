"""Polygon resampling to K points around the object centre (the segmentation target)."""
import random
from typing import List, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform

from visionllm.registry import TRANSFORMS


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _centroid(ring: np.ndarray) -> np.ndarray:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    if abs(area) < 1e-9:
        return ring.mean(axis=0)
    cx = ((x + np.roll(x, -1)) * cross).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    return np.asarray([cx, cy])


def resample_polygon(points: np.ndarray, num_points: int) -> np.ndarray:
    """Resample a closed polygon ``[m, 2]`` (image pixels, y down) to ``[num_points, 2]``.

    The fixed rule, so that the same shape always gives the same target sequence:
    - centre: the area centroid of the polygon;
    - start: the outermost boundary point on the ray from the centre at angle 0 (pointing to
      +x); when that ray misses the boundary, the vertex closest in angle to it;
    - order: counter-clockwise as seen on the screen (y down), i.e. the first points move up;
    - spacing: a polygon of at most ``num_points`` vertices keeps every vertex (so its shape is
      exact) and the remaining points split its longest edges evenly; a polygon with more
      vertices is resampled at equal arc length along the boundary.
    """
    ring = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(ring)}")
    # Screen counter-clockwise (y down) has a negative shoelace area in pixel coordinates.
    if _signed_area(ring) > 0:
        ring = ring[::-1]
    centre = _centroid(ring)
    nxt = np.roll(ring, -1, axis=0)
    dy = nxt[:, 1] - ring[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (centre[1] - ring[:, 1]) / dy
    crosses = (dy != 0) & (t >= 0) & (t < 1)
    x_hit = ring[:, 0] + t * (nxt[:, 0] - ring[:, 0])
    crosses &= x_hit >= centre[0]
    if crosses.any():
        edge = int(np.flatnonzero(crosses)[np.argmax(x_hit[crosses])])
        start = np.asarray([x_hit[edge], centre[1]])
        ring = np.concatenate([[start], ring[edge + 1:], ring[:edge + 1]])
    else:
        rel = ring - centre
        angles = np.abs(np.arctan2(-rel[:, 1], rel[:, 0]))
        first = int(np.argmin(angles))
        ring = np.roll(ring, -first, axis=0)
    closed = np.concatenate([ring, ring[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total <= 0:
        return np.repeat(ring[:1], num_points, axis=0).astype(np.float32)
    if len(ring) <= num_points:
        return _keep_vertices(ring, seg, num_points)
    targets = np.arange(num_points) * total / num_points
    x = np.interp(targets, cum, closed[:, 0])
    y = np.interp(targets, cum, closed[:, 1])
    return np.stack([x, y], axis=1).astype(np.float32)


def _keep_vertices(ring: np.ndarray, seg: np.ndarray, num_points: int) -> np.ndarray:
    """All vertices of ``ring`` plus ``num_points - len(ring)`` points that split the edges,
    each extra point going to the edge whose pieces are currently longest."""
    splits = np.zeros(len(ring), dtype=np.int64)
    for _ in range(num_points - len(ring)):
        splits[int(np.argmax(seg / (splits + 1)))] += 1
    out = []
    for i, (a, n) in enumerate(zip(ring, splits)):
        b = ring[(i + 1) % len(ring)]
        for k in range(n + 1):
            out.append(a + (b - a) * (k / (n + 1)))
    return np.asarray(out, dtype=np.float32)


def largest_part(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The part with the largest area (an occluded object may be split in several)."""
    return max(parts, key=lambda p: abs(_signed_area(np.asarray(p, dtype=np.float64))))


@TRANSFORMS.register_module()
class ResamplePolygons(BaseTransform):
    """``gt_polygons`` (parts per instance) → float32 ``[n, K, 2]`` and ``num_points = K``.

    ``num_points`` is one K or a list to draw from per sample (the paper trains K in 8..24).
    Instances without a polygon (crowd RLE) fall back to their box outline. Multi-part objects
    keep their largest part.
    """

    def __init__(self, num_points: Union[int, Sequence[int]] = 16):
        self.choices: List[int] = [num_points] if isinstance(num_points, int) else list(num_points)
        if not self.choices or any(k < 3 for k in self.choices):
            raise ValueError(f"num_points must be >= 3, got {num_points}")

    def transform(self, results: dict) -> dict:
        if results.get("task") not in (None, "segmentation"):
            return results
        k = self.choices[0] if len(self.choices) == 1 else random.Random(np.random.randint(2 ** 31)).choice(self.choices)
        polygons = results.get("gt_polygons", [])
        boxes = results.get("gt_bboxes", np.zeros((0, 4), np.float32))
        out = np.zeros((len(polygons), k, 2), dtype=np.float32)
        for i, parts in enumerate(polygons):
            if not parts:
                x1, y1, x2, y2 = boxes[i]
                parts = [np.asarray([[x1, y1], [x1, y2], [x2, y2], [x2, y1]], dtype=np.float32)]
            out[i] = resample_polygon(largest_part(parts), k)
        results["gt_polygons"] = out
        results["num_points"] = k
        return results
