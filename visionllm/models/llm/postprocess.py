"""The structured post-processor: field logits → scored points → instances in input pixels.

``decode`` turns one pass's slot logits into scores, labels and points (pixels of the resized
image); ``merge`` joins the passes of one image (category sets split over several passes), keeps
the best, rescales to the original image and rasterises polygons into masks.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmengine.structures import InstanceData
from torchvision.ops import batched_nms

from visionllm.models.refinement import extent_boxes
from visionllm.tasks import task_of_instruction
from visionllm.utils.polygon_masks import polygon_mask

from .structured_head import SlotLogits


@dataclass
class SlotPredictions:
    """Decoded slots of one pass: ``scores [N]``, ``labels [N]`` (indices into the image's
    category list) and ``points [N, K, 2]`` in pixels of the resized image."""
    scores: torch.Tensor
    labels: torch.Tensor
    points: torch.Tensor


def rasterize_polygons(polygons: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """K-point polygons ``[n, K, 2]`` (pixels) → boolean masks ``[n, h, w]`` (the package's one
    rasteriser, ``visionllm.utils.polygon_masks``)."""
    h, w = shape
    masks = np.zeros((len(polygons), h, w), dtype=bool)
    for i, polygon in enumerate(polygons.detach().cpu().double().numpy()):
        masks[i] = polygon_mask([polygon], h, w)
    return torch.from_numpy(masks)


class StructuredPostProcessor:
    """Decoding and merging of structured predictions.

    Args:
        codec: the ``LocationCodec`` of the location bins.
        max_per_img / score_thr: predictions kept per image.
        nms_iou: when set, of the kept instances of one category whose boxes overlap by more than
            this IoU only the best-scoring one stays (None: every slot's instance stays). Each slot
            answers from its own image token, so neighbouring tokens may both claim one object.

    Each coordinate is the mean of its location distribution (not its mode): the mean moves by
    less than a bin, the mode only in whole bins. The one box of a single-instance answer (grounding) is the slot
    whose image token the token class prior (the tokenizer's alignment of tokens with the
    expression) ranks first, when there is a prior: each slot's LLM logit is computed without
    seeing the other slots, so it cannot compare them ("the left one" of two objects), while the
    tokenizer's tokens see each other. Without a prior the class probability decides.
    """

    def __init__(self, codec, max_per_img: int = 100, score_thr: float = 0.0, nms_iou: Optional[float] = None):
        if nms_iou is not None and not 0.0 < float(nms_iou) <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1] or None, got {nms_iou}")
        self.codec = codec
        self.max_per_img = max_per_img
        self.score_thr = score_thr
        self.nms_iou = nms_iou

    def decode(self, logits: SlotLogits, refs: torch.Tensor, sample, num_categories: int, offset: int,
               class_prior: Optional[torch.Tensor] = None) -> SlotPredictions:
        """Scores, labels (+ ``offset``, the pass's first category) and points of the slots."""
        num_slots = logits.cls.shape[0]
        refs = refs[:num_slots]
        scores, labels = self.slot_scores(logits.cls, sample, num_categories, class_prior)
        h, w = sample.metainfo.get("img_shape")[:2]
        img_wh = (float(w), float(h))
        loc = logits.loc.view(num_slots, -1, 2, self.codec.num_bins)
        points = self.codec.decode_expectation(loc.softmax(-1), refs.unsqueeze(1), img_wh)
        return SlotPredictions(scores, labels + offset, points.float())

    @staticmethod
    def slot_scores(cls_logits: torch.Tensor, sample, num_categories: int,
                    class_prior: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(scores [N], labels [N])`` of the slots from their class logits ``[N, n+1]`` (the
        class prior ranks a single-instance answer's slots, when there is one)."""
        num_slots = cls_logits.shape[0]
        probs = cls_logits.softmax(-1)[:, :num_categories]
        if not num_categories:
            return probs.new_zeros(num_slots), probs.new_zeros(num_slots, dtype=torch.long)
        if task_of_instruction(sample.metainfo["instruction"]).single_instance and class_prior is not None:
            return class_prior[:num_slots, :num_categories].sigmoid().max(-1)
        return probs.max(-1)

    def score_threshold(self, sample) -> float:
        """The sample's ``score_thr`` (a caller's display threshold), else the configured one."""
        return float(sample.metainfo.get("score_thr", self.score_thr))

    def can_drop(self, sample, num_slots: int) -> bool:
        """Whether ``merge`` may drop any of ``num_slots`` slots of this sample's pass."""
        single = task_of_instruction(sample.metainfo["instruction"]).single_instance
        return single or self.score_threshold(sample) > 0 or self.max_per_img < num_slots

    def survivors(self, scores: torch.Tensor, sample) -> torch.Tensor:
        """``[N]`` bool: the slots of one pass that ``merge`` can keep (the best one of a
        single-instance answer; else the best ``max_per_img`` scoring at least the threshold).
        Only these need their coordinates decoded."""
        if not len(scores):
            return torch.zeros_like(scores, dtype=torch.bool)
        single = task_of_instruction(sample.metainfo["instruction"]).single_instance
        budget = 1 if single else self.max_per_img
        # Ties with the last kept score stay: merge's sort may pick any of them.
        floor = scores.sort(descending=True).values[budget - 1] if len(scores) > budget else scores.min()
        if not single:
            floor = torch.clamp(floor, min=self.score_threshold(sample))
        return scores >= floor

    def merge(self, parts: List[SlotPredictions], sample) -> InstanceData:
        """Concatenate the passes of one image, keep the best, rescale to ``ori_shape``."""
        meta = sample.metainfo
        scores = torch.cat([p.scores for p in parts])
        labels = torch.cat([p.labels for p in parts])
        points = torch.cat([p.points for p in parts])
        order = scores.argsort(descending=True)
        if task_of_instruction(meta["instruction"]).single_instance:
            order = order[:1]
        else:
            order = order[scores[order] >= self.score_threshold(sample)]
            if self.nms_iou is not None and len(order) > 1:
                kept = batched_nms(extent_boxes(points[order]).float(), scores[order].float(), labels[order],
                                   float(self.nms_iou))
                order = order[kept]
            order = order[:self.max_per_img]
        scores, labels, points = scores[order], labels[order], points[order]
        w_scale, h_scale = meta.get("scale_factor", (1.0, 1.0))[:2]
        ori_h, ori_w = meta.get("ori_shape", meta.get("img_shape"))[:2]
        points = points / points.new_tensor([w_scale, h_scale])
        points[..., 0] = points[..., 0].clamp(0, ori_w)
        points[..., 1] = points[..., 1].clamp(0, ori_h)
        result = InstanceData()
        # Corners are decoded as written; a box is their extent (also the box of a polygon).
        result.bboxes = extent_boxes(points) if len(points) else points.new_zeros(0, 4)
        result.scores = scores
        category_ids = meta.get("category_ids")
        if category_ids is not None:
            result.labels = torch.as_tensor(category_ids, dtype=torch.long)[labels.cpu()].to(labels.device)
        else:
            result.labels = labels
        if points.shape[1] > 2:
            result.polygons = points
            result.masks = rasterize_polygons(points, (int(ori_h), int(ori_w)))
        return result
