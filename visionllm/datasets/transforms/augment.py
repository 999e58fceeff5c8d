"""Training augmentation that keeps boxes, polygons and text true: photometric distortion and
random crop (the following ``ResizeKeepRatio`` scales every crop to the model's size, so the
two together are a random resize-and-crop).

Which crops keep the text true (the rule of ``RandomCropWithText``):

- detection / segmentation: any window; objects are clipped to it (boxes and polygons), objects
  cut away (or left with less than ``min_area`` pixels) are dropped with their labels, so the
  targets describe exactly the objects in the crop.
- caption / VQA: only windows that contain every box the sample carries (the image's objects,
  read with ``boxes_file``), so counts, colours, presence and relations stay true. Samples
  without boxes (the text may depend on any part of the image) and samples whose text names a
  position (left, right, top, ... may refer to the image's frame, which a crop moves) are not
  cropped.
- grounding: not cropped: an expression such as "the leftmost star" depends on objects the
  sample does not carry (only the referred box), which a crop could cut away.
- any task: a sample's ``regions`` (boxes its instruction points at) stay whole inside the window
  and move with it.
"""
import re
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from shapely.geometry import Polygon, box as shapely_box

from visionllm.registry import TRANSFORMS

from .geometric import TEXT_KEYS

POSITION_WORDS = re.compile(r"\b(left|right|leftmost|rightmost|top|topmost|bottom|bottommost|above|below|"
                            r"highest|lowest|upper|lower|middle|centre|center|side|corner)\b", re.IGNORECASE)


def _texts(results: dict) -> list:
    def strings(value):
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return [s for v in value for s in strings(v)]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        return []

    return [text for key in TEXT_KEYS for text in strings(results.get(key))]


def mentions_position(results: dict) -> bool:
    """Whether any text of the sample (expression, question, answers, captions) names a position."""
    return any(POSITION_WORDS.search(text) for text in _texts(results))


@TRANSFORMS.register_module()
class PhotometricDistortionRGB(BaseTransform):
    """Random brightness, contrast, saturation (and hue) changes of an RGB uint8 image, each
    applied with probability ``prob``.

    The hue is left alone by default (``hue_delta=0``): colour words are answers and parts of
    expressions, and a hue shift would make them false. The other ranges are kept small enough
    that the named colours stay the nearest name (tests/test_augment.py).
    """

    def __init__(self, brightness_delta: float = 20.0, contrast_range: Tuple[float, float] = (0.85, 1.15),
                 saturation_range: Tuple[float, float] = (0.85, 1.15), hue_delta: float = 0.0, prob: float = 0.5):
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta
        self.prob = prob

    def transform(self, results: dict) -> dict:
        img = results["img"].astype(np.float32)
        if np.random.rand() < self.prob:
            img += np.random.uniform(-self.brightness_delta, self.brightness_delta)
        if np.random.rand() < self.prob:
            mean = img.mean()
            img = mean + np.random.uniform(*self.contrast_range) * (img - mean)
        if np.random.rand() < self.prob:
            grey = img @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
            img = grey[..., None] + np.random.uniform(*self.saturation_range) * (img - grey[..., None])
        img = np.clip(np.round(img), 0, 255).astype(np.uint8)
        if self.hue_delta and np.random.rand() < self.prob:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            shift = int(round(np.random.uniform(-self.hue_delta, self.hue_delta) / 2))  # OpenCV hue: degrees / 2
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        results["img"] = img
        return results


def clip_parts(parts: Sequence[np.ndarray], window) -> list:
    """Polygon parts ``[m, 2]`` intersected with a shapely box; the exterior rings of the pieces
    (a convex window cuts no hole into a simple polygon)."""
    out = []
    for part in parts:
        poly = Polygon(np.asarray(part, dtype=np.float64))
        if not poly.is_valid:
            poly = poly.buffer(0)
        piece = poly.intersection(window)
        for geom in getattr(piece, "geoms", [piece]):
            if isinstance(geom, Polygon) and not geom.is_empty and geom.area > 0:
                out.append(np.asarray(geom.exterior.coords, dtype=np.float32)[:-1])
    return out


@TRANSFORMS.register_module()
class RandomCropWithText(BaseTransform):
    """Crop a random window of ``min_scale``..1 of each image side (see the module doc for the
    rule per task); the crop is applied with probability ``prob``.

    Boxes become the window's part of each object: a clipped box, tightened to the extent of the
    clipped polygons when the object has polygons (so box = polygon extent after a cut).
    Put it after ``LoadVisionLLMAnnotations`` and before ``ResamplePolygons`` and the resize.
    """

    def __init__(self, prob: float = 0.5, min_scale: float = 0.6, min_area: float = 4.0,
                 text_tasks: Sequence[str] = ("caption", "vqa"), skip_tasks: Sequence[str] = ("grounding",),
                 max_tries: int = 10):
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.prob = prob
        self.min_scale = min_scale
        self.min_area = min_area
        self.text_tasks = tuple(text_tasks)
        self.skip_tasks = tuple(skip_tasks)
        self.max_tries = max_tries

    def _window(self, h: int, w: int, keep: Optional[np.ndarray]) -> Tuple[int, int, int, int]:
        """(x0, y0, crop w, crop h) of a random window; containing ``keep`` (xyxy) if given."""
        cw = max(1, int(round(w * np.random.uniform(self.min_scale, 1.0))))
        ch = max(1, int(round(h * np.random.uniform(self.min_scale, 1.0))))
        lo_x, lo_y, hi_x, hi_y = 0, 0, w - cw, h - ch
        if keep is not None:
            kx1, ky1 = int(np.floor(keep[0])), int(np.floor(keep[1]))
            kx2, ky2 = int(np.ceil(keep[2])), int(np.ceil(keep[3]))
            cw, ch = min(w, max(cw, kx2 - kx1)), min(h, max(ch, ky2 - ky1))
            lo_x, lo_y = max(0, kx2 - cw), max(0, ky2 - ch)
            hi_x, hi_y = min(kx1, w - cw), min(ky1, h - ch)
        x0 = int(np.random.randint(lo_x, hi_x + 1))
        y0 = int(np.random.randint(lo_y, hi_y + 1))
        return x0, y0, cw, ch

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        task = results.get("task")
        if task in self.skip_tasks:
            return results
        if isinstance(results.get("gt_polygons"), np.ndarray):
            raise RuntimeError("RandomCropWithText must come before ResamplePolygons")
        boxes = np.asarray(results.get("gt_bboxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        h, w = results["img"].shape[:2]
        keep_all = None
        if task in self.text_tasks:
            if "instances" not in results or mentions_position(results):
                return results
            if len(boxes):
                keep_all = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])
        if results.get("regions") is not None and len(results["regions"]):
            # the window keeps every region of the instruction whole
            regions = np.asarray(results["regions"], np.float32).reshape(-1, 4)
            extent = np.concatenate([regions[:, :2].min(0), regions[:, 2:].max(0)])
            keep_all = extent if keep_all is None else np.concatenate(
                [np.minimum(keep_all[:2], extent[:2]), np.maximum(keep_all[2:], extent[2:])])
        for _ in range(self.max_tries):
            x0, y0, cw, ch = self._window(h, w, keep_all)
            cropped = self._crop_targets(results, boxes, x0, y0, cw, ch)
            if cropped is not None:
                break
        else:
            return results
        new_boxes, kept, polygons = cropped
        results["img"] = np.ascontiguousarray(results["img"][y0:y0 + ch, x0:x0 + cw])
        results["img_shape"] = (ch, cw)
        results["crop_box"] = (x0, y0, x0 + cw, y0 + ch)  # in the pixels of the image before the crop
        results["gt_bboxes"] = new_boxes
        if results.get("regions") is not None:
            shift = np.asarray([x0, y0, x0, y0], np.float32)
            results["regions"] = (np.asarray(results["regions"], np.float32).reshape(-1, 4) - shift).clip(
                0, np.asarray([cw, ch, cw, ch], np.float32))
        if "gt_labels" in results:
            results["gt_labels"] = np.asarray(results["gt_labels"])[kept]
        if polygons is not None:
            results["gt_polygons"] = polygons
        return results

    def _crop_targets(self, results, boxes, x0, y0, cw, ch):
        """(boxes, kept indices, polygons) in the window, or None when the crop would drop every
        object of an image that has some (another window is tried)."""
        window = shapely_box(0, 0, cw, ch)
        shift = np.asarray([x0, y0, x0, y0], dtype=np.float32)
        clipped = boxes - shift
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, cw)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, ch)
        polygons = results.get("gt_polygons")
        new_polygons = [] if polygons is not None else None
        kept = []
        for i, b in enumerate(clipped):
            area = float((b[2] - b[0]) * (b[3] - b[1]))
            parts = None
            if polygons is not None and len(polygons[i]):
                parts = clip_parts([p - np.asarray([x0, y0], np.float32) for p in polygons[i]], window)
                if not parts:
                    continue
                points = np.concatenate(parts)
                b[:2] = np.maximum(b[:2], points.min(0))
                b[2:] = np.minimum(b[2:], points.max(0))
                area = sum(Polygon(p).area for p in parts)
            if b[2] <= b[0] or b[3] <= b[1] or area < self.min_area:
                continue
            kept.append(i)
            if new_polygons is not None:
                new_polygons.append(parts if parts is not None else [])
        if len(boxes) and not kept:
            return None
        kept = np.asarray(kept, dtype=np.int64)
        return clipped[kept].reshape(-1, 4), kept, new_polygons
