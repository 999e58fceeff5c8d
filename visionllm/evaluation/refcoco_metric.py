"""Visual grounding precision at IoU 0.5, in original image coordinates."""
from typing import Dict, Optional

import numpy as np
from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .table import print_table
from .utils import box_iou, dump_json, samples_of_task, to_numpy


def gt_box_in_original(sample: dict) -> np.ndarray:
    """The ground-truth box of a grounding sample mapped back from ``img_shape`` to
    ``ori_shape`` pixels (inverse of the pipeline's resize; test pipelines do not flip)."""
    box = to_numpy(sample["gt_instances"]["bboxes"]).reshape(-1, 4)[0].astype(np.float64)
    sx, sy = sample.get("scale_factor") or (1.0, 1.0)
    return box / np.asarray([sx, sy, sx, sy])


@METRICS.register_module()
class RefCocoMetric(BaseMetric):
    """Precision@0.5 of the predicted box (highest score when several) against the referred
    box. Dumps ``<outfile_prefix>.refexp.json``: ``[{image_id, ref_id, ann_id, sentence, bbox
    (xywh), iou}]``."""

    default_prefix = "refcoco"

    def __init__(self, iou_thr: float = 0.5, outfile_prefix: Optional[str] = None, task: Optional[str] = "grounding",
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.iou_thr = iou_thr
        self.outfile_prefix = outfile_prefix
        self.task = task

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            pred = sample.get("pred_instances", {})
            boxes = to_numpy(pred.get("bboxes", np.zeros((0, 4)))).reshape(-1, 4)
            gt = gt_box_in_original(sample)
            if len(boxes):
                scores = to_numpy(pred.get("scores", np.ones(len(boxes)))).reshape(-1)
                box = boxes[int(np.argmax(scores))].astype(np.float64)
                iou = box_iou(box, gt)
            else:
                box, iou = None, 0.0
            self.results.append(dict(image_id=sample.get("img_id"), ref_id=sample.get("ref_id"),
                                     ann_id=sample.get("ann_id"), sentence=sample.get("expression"),
                                     bbox=None if box is None else [float(box[0]), float(box[1]),
                                                                    float(box[2] - box[0]), float(box[3] - box[1])],
                                     iou=iou))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if self.outfile_prefix:
            dump_json(results, f"{self.outfile_prefix}.refexp.json")
        ious = np.asarray([r["iou"] for r in results], dtype=np.float64)
        precision = float((ious >= self.iou_thr).mean() * 100) if len(ious) else 0.0
        mean_iou = float(ious.mean() * 100) if len(ious) else 0.0
        print_table(f"Visual grounding ({len(results)} expressions)", [f"P@{self.iou_thr}", "mean IoU"],
                    [[precision, mean_iou]])
        return {f"precision@{self.iou_thr}": precision, "mean_iou": mean_iou}
