"""The structured criterion: slot-to-instance matching and the loss terms of structured outputs.

For each image the slots are matched one-to-one to the ground-truth instances (Hungarian, on
class probability and expected coordinates). Matched slots learn their instance's class, its
location bins (cross-entropy), the L1 distance of the expected coordinates, optionally the GIoU of
the extent boxes and the refinement steps' errors; unmatched slots learn no-object with a small
weight. Terms are summed over a sub-batch and returned with the weight to average them by.
"""
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

import visionllm.models.matching  # noqa: F401  (registers HungarianMatcher)
from visionllm.models.refinement import extent_boxes, outline_distance
from visionllm.registry import TASK_UTILS

from .structured_head import SlotLogits

DEFAULT_LOSS_WEIGHTS = dict(cls=1.0, loc=1.0, loc_l1=5.0, giou=0.0, format=1.0, text=1.0,
                            refine_l1=5.0, refine_giou=2.0, refine_polygon=10.0)

# refine(sample index, matched slot indices, expected points [n, K, 2] in pixels, img_wh) ->
# the refinement steps' points, each [n, K, 2] normalised by the image size.
RefineFn = Callable[[int, torch.Tensor, torch.Tensor, Tuple[float, float]], List[torch.Tensor]]


def ground_truth_points(sample, num_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth points ``[G, K, 2]`` in field order, and labels ``[G]``."""
    gt = sample.gt_instances
    labels = gt.labels.long()
    if num_points == 2:
        return gt.bboxes.float().reshape(-1, 2, 2), labels
    polygons = gt.polygons.float()
    if polygons.shape[1] != num_points:
        raise ValueError(f"ground-truth polygons have {polygons.shape[1]} points, format asks {num_points}")
    return polygons, labels


def combine_terms(terms: Dict[str, List[Tuple[torch.Tensor, float]]],
                  loss_weights: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """``loss_<name>``: the weighted mean of each term's parts, times the term's loss weight."""
    losses = {}
    for name, parts in terms.items():
        total = sum(w for _, w in parts)
        value = sum(v * w for v, w in parts) / max(total, 1e-12)
        losses[f"loss_{name}"] = value * loss_weights[name]
    return losses


class StructuredCriterion:
    """Matching and loss terms of structured outputs.

    Args:
        codec: the ``LocationCodec`` of the location bins.
        matcher: ``TASK_UTILS`` config of the slot ↔ ground-truth matcher.
        no_object_weight: class-loss weight of unmatched slots (target: no-object).
        loss_weights: overrides of ``DEFAULT_LOSS_WEIGHTS`` (see ``LLMTaskDecoder``).
    """

    def __init__(self, codec, matcher: Optional[dict] = None, no_object_weight: float = 0.1,
                 loss_weights: Optional[dict] = None):
        self.codec = codec
        self.num_bins = codec.num_bins
        self.matcher = TASK_UTILS.build(matcher or dict(type="HungarianMatcher", class_weight=1.0,
                                                        coord_weight=5.0, coord_cost="l1"))
        self.no_object_weight = no_object_weight
        self.loss_weights = dict(DEFAULT_LOSS_WEIGHTS)
        unknown = set(loss_weights or {}) - set(self.loss_weights)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; expected some of {sorted(self.loss_weights)}")
        self.loss_weights.update(loss_weights or {})

    @torch.no_grad()
    def match(self, logits: SlotLogits, refs, img_wh, gt_points, gt_labels):
        num_slots = logits.cls.shape[0]
        probs = logits.loc.softmax(-1).view(num_slots, -1, 2, self.num_bins)
        size = torch.tensor(img_wh, device=refs.device)
        expected = self.codec.decode_expectation(probs, refs.unsqueeze(1), img_wh) / size
        gt = gt_points / size
        return self.matcher(logits.cls.softmax(-1), gt_labels,
                            pred_coords=expected.flatten(1), gt_coords=gt.flatten(1))

    def terms(self, slot_logits: Sequence[SlotLogits], reference_points: torch.Tensor, samples: List,
              num_points: int, refine: Optional[RefineFn] = None,
              fallback: Optional[torch.Tensor] = None) -> Iterator[Tuple[str, torch.Tensor, float]]:
        """Yield ``(name, loss, weight)`` of one sub-batch sharing an output format.

        ``slot_logits[b]`` are the logits of sample b, ``reference_points [B, M, 2]`` its image
        tokens' reference points; ``fallback`` is a tensor of the graph that stands in (times
        zero) for the location terms when no slot is matched, so every step has the same terms.
        """
        cls_sum = cls_weight = loc_sum = l1_sum = giou_sum = None
        loc_count = matched_count = 0
        refine_l1 = refine_giou = None
        refine_count = 0
        for b, (logits, sample) in enumerate(zip(slot_logits, samples)):
            num_categories = len(sample.metainfo.get("categories"))
            num_slots = logits.cls.shape[0]
            refs = reference_points[b, :num_slots].detach()
            h, w = sample.metainfo.get("img_shape")[:2]
            img_wh = (float(w), float(h))
            gt_points, gt_labels = ground_truth_points(sample, num_points)
            gt_points, gt_labels = gt_points.to(refs.device), gt_labels.to(refs.device)
            slot_idx, gt_idx = self.match(logits, refs, img_wh, gt_points, gt_labels)
            # Class CE: matched slots → their label, the rest → no-object with a small weight.
            targets = torch.full((num_slots,), num_categories, dtype=torch.long, device=refs.device)
            weights = torch.full((num_slots,), self.no_object_weight, device=refs.device)
            targets[slot_idx] = gt_labels[gt_idx]
            weights[slot_idx] = 1.0
            ce = F.cross_entropy(logits.cls, targets, reduction="none")
            cls_sum = (ce * weights).sum() if cls_sum is None else cls_sum + (ce * weights).sum()
            cls_weight = weights.sum() if cls_weight is None else cls_weight + weights.sum()
            if not len(slot_idx):
                continue
            # Coordinate targets are offsets from the MATCHED slot's reference point.
            matched_refs = refs[slot_idx].unsqueeze(1)
            bins = self.codec.encode(gt_points[gt_idx], matched_refs, img_wh).flatten(1)
            matched_logits = logits.loc[slot_idx]
            loc_ce = F.cross_entropy(matched_logits.flatten(0, 1), bins.flatten(), reduction="sum")
            loc_sum = loc_ce if loc_sum is None else loc_sum + loc_ce
            size = matched_logits.new_tensor(img_wh)
            expected = self.codec.decode_expectation(
                matched_logits.softmax(-1).view(len(slot_idx), -1, 2, self.num_bins), matched_refs, img_wh)
            l1 = ((expected - gt_points[gt_idx]) / size).abs().sum()
            l1_sum = l1 if l1_sum is None else l1_sum + l1
            loc_count += bins.numel()
            if self.loss_weights["giou"]:
                giou = generalized_box_iou_loss(extent_boxes(expected), extent_boxes(gt_points[gt_idx]),
                                                reduction="sum")
                giou_sum = giou if giou_sum is None else giou_sum + giou
                matched_count += len(slot_idx)
            if refine is not None:
                target = gt_points[gt_idx] / size
                if num_points == 2:
                    target = extent_boxes(target).view(-1, 2, 2)
                for step in refine(b, slot_idx, expected, img_wh):
                    refine_count += len(step)
                    if num_points == 2:
                        l1 = (step - target).abs().sum()
                        giou = generalized_box_iou_loss(step.flatten(1), target.flatten(1), reduction="sum")
                        refine_giou = giou if refine_giou is None else refine_giou + giou
                    else:
                        l1 = outline_distance(step, target).sum()
                    refine_l1 = l1 if refine_l1 is None else refine_l1 + l1
        yield "cls", cls_sum / cls_weight, float(cls_weight)
        if loc_count:
            yield "loc", loc_sum / loc_count, float(loc_count)
            yield "loc_l1", l1_sum / loc_count, float(loc_count)
            if matched_count:
                yield "giou", giou_sum / matched_count, float(matched_count)
            if refine_count and num_points == 2:
                yield "refine_l1", refine_l1 / (4 * refine_count), float(4 * refine_count)
                yield "refine_giou", refine_giou / refine_count, float(refine_count)
            elif refine_count:
                yield "refine_polygon", refine_l1 / refine_count, float(refine_count)
        else:
            for name in ("loc", "loc_l1") + (("giou",) if self.loss_weights["giou"] else ()):
                yield name, fallback.sum() * 0.0, 1.0
