"""Image and annotation loading."""
from typing import List

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms import LoadImageFromFile

from visionllm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageRGB(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` with the image turned to RGB (the model's channel order)."""

    def transform(self, results: dict):
        results = super().transform(results)
        if results is None:
            return None
        img = results["img"]
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        results["img"] = np.ascontiguousarray(img[..., ::-1])  # mmcv decodes to BGR
        results.setdefault("flip", False)
        results.setdefault("scale_factor", (1.0, 1.0))
        return results


def polygon_parts(mask) -> List[np.ndarray]:
    """COCO polygon segmentation → list of ``[m, 2]`` float32 arrays (RLE gives no parts)."""
    if not isinstance(mask, list):
        return []
    return [np.asarray(flat, dtype=np.float32).reshape(-1, 2) for flat in mask if len(flat) >= 6]


@TRANSFORMS.register_module()
class LoadVisionLLMAnnotations(BaseTransform):
    """``instances`` → ``gt_bboxes`` float32 [n, 4] xyxy, ``gt_labels`` int64 [n] (dataset label
    ids) and ``gt_polygons`` (per instance a list of ``[m, 2]`` parts). Ignored (crowd)
    instances are left out: they are no training targets, and COCOeval reads them from the
    annotation file itself."""

    def __init__(self, with_polygons: bool = True):
        self.with_polygons = with_polygons

    def transform(self, results: dict) -> dict:
        instances = [i for i in results.get("instances", []) if not i.get("ignore_flag", 0)]
        results["gt_bboxes"] = np.asarray([i["bbox"] for i in instances], dtype=np.float32).reshape(-1, 4)
        results["gt_labels"] = np.asarray([i["bbox_label"] for i in instances], dtype=np.int64)
        if self.with_polygons:
            results["gt_polygons"] = [polygon_parts(i.get("mask")) for i in instances]
        return results
