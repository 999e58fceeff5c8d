"""Resizing and flipping that keep boxes, polygons, regions and text consistent with the image."""
from typing import Optional, Sequence, Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from visionllm.instructions.mirror_words import swap_left_right
from visionllm.instructions.regions import scale_regions
from visionllm.registry import TRANSFORMS

# Text fields of the data_info that describe the image and so mirror with it.
# Sample keys holding text about the image (``history``: a conversation's earlier turns;
# ``request``: a plain-language request).
TEXT_KEYS = ("expression", "question", "target_text", "gt_texts", "history", "request")


def _swap_any(value):
    if isinstance(value, str):
        return swap_left_right(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_swap_any(v) for v in value)
    if isinstance(value, dict):
        return {k: _swap_any(v) for k, v in value.items()}
    return value


@TRANSFORMS.register_module()
class ResizeKeepRatio(BaseTransform):
    """Resize keeping the aspect ratio so the long side fits ``max(scale)`` and the short side
    ``min(scale)`` (mmdet's keep-ratio rule), then optionally pad bottom/right.

    Padding is off by default: ``VisionLLMDataPreprocessor`` pads each batch and records the
    padding mask, which pixels padded here would not be part of. ``pad_to=(w, h)`` gives fixed
    size inputs when that is wanted.
    """

    def __init__(self, scale: Tuple[int, int] = (1333, 800), pad_to: Optional[Tuple[int, int]] = None,
                 pad_val: int = 0, interpolation: str = "bilinear"):
        self.scale = tuple(scale)
        self.pad_to = tuple(pad_to) if pad_to is not None else None
        self.pad_val = pad_val
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        factor = min(max(self.scale) / max(h, w), min(self.scale) / min(h, w))
        new_w, new_h = max(1, int(round(w * factor))), max(1, int(round(h * factor)))
        img = mmcv.imresize(img, (new_w, new_h), interpolation=self.interpolation)
        sx, sy = new_w / w, new_h / h
        prev = results.get("scale_factor", (1.0, 1.0))
        results["scale_factor"] = (prev[0] * sx, prev[1] * sy)
        results["img_shape"] = (new_h, new_w)
        if "gt_bboxes" in results:
            boxes = results["gt_bboxes"] * np.asarray([sx, sy, sx, sy], dtype=np.float32)
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, new_w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, new_h)
            results["gt_bboxes"] = boxes
        if results.get("regions") is not None:  # inside the image before, inside it after: no clipping
            results["regions"] = scale_regions(results["regions"], sx, sy)
        if "gt_polygons" in results:
            scale = np.asarray([sx, sy], dtype=np.float32)
            results["gt_polygons"] = _map_polygons(results["gt_polygons"], lambda p: p * scale)
        if self.pad_to is not None:
            pw, ph = max(self.pad_to[0], new_w), max(self.pad_to[1], new_h)
            img = mmcv.impad(img, shape=(ph, pw), pad_val=self.pad_val)
        results["img"] = img
        results["pad_shape"] = img.shape[:2]
        return results


def _map_polygons(polygons, fn):
    if isinstance(polygons, np.ndarray):
        return fn(polygons)
    return [[fn(part) for part in parts] for parts in polygons]


@TRANSFORMS.register_module()
class RandomFlipWithText(BaseTransform):
    """Horizontal flip of image, boxes, polygons and ``regions``, with "left"/"right" swapped in the
    expression, question, answers and captions so the text still describes the picture.

    Put it before ``ResamplePolygons`` (mirroring reverses a polygon's orientation, which the
    resampling start rule normalises) and before any padding.
    """

    def __init__(self, prob: float = 0.5, text_keys: Sequence[str] = TEXT_KEYS):
        self.prob = prob
        self.text_keys = tuple(text_keys)

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            results.setdefault("flip", False)
            return results
        if isinstance(results.get("gt_polygons"), np.ndarray):
            raise RuntimeError("RandomFlipWithText must come before ResamplePolygons")
        img = results["img"]
        w = img.shape[1]
        results["img"] = np.ascontiguousarray(img[:, ::-1])
        if "gt_bboxes" in results:
            boxes = results["gt_bboxes"].copy()
            boxes[:, [0, 2]] = w - results["gt_bboxes"][:, [2, 0]]
            results["gt_bboxes"] = boxes
        if "gt_polygons" in results:
            def mirror(part):
                out = part.copy()
                out[:, 0] = w - part[:, 0]
                return out
            results["gt_polygons"] = _map_polygons(results["gt_polygons"], mirror)
        if results.get("regions") is not None:
            regions = np.asarray(results["regions"], np.float32).reshape(-1, 4)
            results["regions"] = np.stack([w - regions[:, 2], regions[:, 1], w - regions[:, 0], regions[:, 3]], -1)
        for key in self.text_keys:
            if results.get(key) is not None:
                results[key] = _swap_any(results[key])
        results["flip"] = not results.get("flip", False)
        return results
