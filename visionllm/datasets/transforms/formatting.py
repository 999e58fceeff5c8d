"""Packing a pipeline result into the model's input dict and ``DetDataSample``."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from visionllm.registry import TRANSFORMS

META_KEYS = ("img_id", "img_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip", "task",
             "instruction", "categories", "category_ids", "output_format", "target_text", "gt_texts",
             "question_id", "answer_type", "history", "regions", "turn")


@TRANSFORMS.register_module()
class PackVisionLLMInputs(BaseTransform):
    """→ ``dict(inputs=uint8 [3, H, W] RGB, data_samples=DetDataSample)`` as described in
    docs/interfaces.md ("Data samples"): metainfo ``META_KEYS`` (+ ``extra_meta_keys``) and
    ``gt_instances`` with ``bboxes`` [n, 4] (img_shape pixels), ``labels`` [n] (index into
    ``categories``) and, for segmentation, ``polygons`` [n, K, 2]."""

    def __init__(self, extra_meta_keys: Sequence[str] = ("expression", "question", "ref_id", "ann_id")):
        self.meta_keys = tuple(META_KEYS) + tuple(extra_meta_keys)

    def transform(self, results: dict) -> dict:
        img = results["img"]
        results.setdefault("img_shape", img.shape[:2])
        results.setdefault("pad_shape", img.shape[:2])
        results.setdefault("ori_shape", img.shape[:2])
        results.setdefault("scale_factor", (1.0, 1.0))
        results.setdefault("flip", False)
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(torch.uint8)
        sample = DetDataSample()
        gt = InstanceData()
        boxes = results.get("gt_bboxes", np.zeros((0, 4), np.float32))
        gt.bboxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        gt.labels = torch.as_tensor(np.asarray(results.get("gt_labels", np.zeros(0)), dtype=np.int64))
        if results.get("task") == "segmentation" and isinstance(results.get("gt_polygons"), np.ndarray):
            gt.polygons = torch.as_tensor(results["gt_polygons"], dtype=torch.float32)
        sample.gt_instances = gt
        meta = {}
        for key in self.meta_keys:
            if key in results:
                value = results[key]
                meta[key] = tuple(value) if key in ("ori_shape", "img_shape", "pad_shape", "scale_factor") else value
            elif key in META_KEYS:
                meta[key] = None
        sample.set_metainfo(meta)
        return dict(inputs=inputs, data_samples=sample)
