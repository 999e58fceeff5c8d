"""COCO box and mask AP of detection / segmentation predictions (pycocotools COCOeval)."""
import contextlib
import io
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.evaluator import BaseMetric
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionllm.registry import METRICS
from visionllm.utils.polygon_masks import polygon_rle

from .table import print_table
from .utils import dump_json, to_dict, to_numpy

STAT_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


@METRICS.register_module()
class VisionLLMCocoMetric(BaseMetric):
    """Box (``'bbox'``) and mask (``'segm'``) AP against a COCO annotation file.

    Predicted ``labels`` are dataset label ids (indices into the categories sorted by id, the
    order ``CocoInstancesDataset`` uses); boxes are xyxy in original image pixels. Masks come
    from ``pred_instances.masks`` or, when absent, from rasterising ``pred_instances.polygons``.
    The standard result json (``<outfile_prefix>.bbox.json`` / ``.segm.json``) is exactly what
    is evaluated, so pycocotools run on the dump gives the same numbers.
    """

    default_prefix = "coco"

    def __init__(self, ann_file: str, metric: Union[str, Sequence[str]] = "bbox", outfile_prefix: Optional[str] = None,
                 task: Optional[str] = None, collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ann_file = ann_file
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        for m in self.metrics:
            if m not in ("bbox", "segm"):
                raise ValueError(f"metric must be 'bbox' or 'segm', got {m!r}")
        self.outfile_prefix = outfile_prefix
        self.task = task
        self._coco = None

    @property
    def coco(self) -> COCO:
        if self._coco is None:
            if not osp.isfile(self.ann_file):
                raise FileNotFoundError(f"annotation file not found: {self.ann_file}")
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(self.ann_file)
        return self._coco

    @property
    def cat_ids(self) -> List[int]:
        return sorted(self.coco.getCatIds())

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:
            sample = to_dict(sample)
            if self.task is not None and sample.get("task") != self.task:
                continue
            pred = sample.get("pred_instances", {})
            h, w = sample["ori_shape"][:2]
            result = dict(img_id=sample["img_id"], bboxes=to_numpy(pred.get("bboxes", np.zeros((0, 4)))).reshape(-1, 4),
                          scores=to_numpy(pred.get("scores", np.zeros(0))).reshape(-1),
                          labels=to_numpy(pred.get("labels", np.zeros(0))).reshape(-1).astype(np.int64))
            if "segm" in self.metrics:
                result["rles"] = self._encode_masks(pred, h, w)
            self.results.append(result)

    @staticmethod
    def _encode_masks(pred: dict, h: int, w: int) -> List[dict]:
        if pred.get("masks") is not None:
            masks = to_numpy(pred["masks"]).astype(np.uint8)
            rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
        else:
            polygons = to_numpy(pred.get("polygons", np.zeros((0, 3, 2))))
            if len(polygons) == 0 and "bboxes" in pred:
                # The model answered with boxes (it emits its own format tokens): a box is the
                # 4-point polygon of its corners.
                x1, y1, x2, y2 = to_numpy(pred["bboxes"]).reshape(-1, 4).T
                polygons = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                                     np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)
            rles = [polygon_rle([p], h, w) for p in polygons]
        for rle in rles:
            rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        return rles

    def results_to_json(self, results: List[dict]) -> Dict[str, List[dict]]:
        """The standard COCO result lists ``{'bbox': [...], 'segm': [...]}``."""
        cat_ids = self.cat_ids
        out = {m: [] for m in self.metrics}
        for r in results:
            for i, (box, score, label) in enumerate(zip(r["bboxes"], r["scores"], r["labels"])):
                if not 0 <= label < len(cat_ids):
                    continue
                x1, y1, x2, y2 = (float(v) for v in box)
                base = dict(image_id=r["img_id"], category_id=cat_ids[label], score=float(score))
                if "bbox" in out:
                    out["bbox"].append(dict(base, bbox=[x1, y1, x2 - x1, y2 - y1]))
                if "segm" in out:
                    out["segm"].append(dict(base, segmentation=r["rles"][i]))
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        dumps = self.results_to_json(results)
        img_ids = sorted({r["img_id"] for r in results})
        metrics, rows = {}, []
        for iou_type, records in dumps.items():
            if self.outfile_prefix:
                dump_json(records, f"{self.outfile_prefix}.{iou_type}.json")
            stats = evaluate_coco(self.coco, records, iou_type, img_ids)
            for name, value in zip(STAT_NAMES, stats):
                metrics[f"{iou_type}_{name}"] = float(value)
            rows.append([iou_type] + [float(v) for v in stats[:6]])
        print_table(f"COCO AP ({self.task or 'all'}, {len(img_ids)} images)", ["type", *STAT_NAMES], rows)
        return metrics


def evaluate_coco(coco_gt: COCO, records: List[dict], iou_type: str, img_ids: Optional[List[int]] = None) -> np.ndarray:
    """COCOeval ``stats`` (12 numbers) of result records; zeros when there are none."""
    if not records:
        return np.zeros(12)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(records)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids:
            evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)
