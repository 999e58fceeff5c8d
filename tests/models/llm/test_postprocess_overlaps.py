"""The post-processor's ``nms_iou``: of one category's overlapping instances only the best stays."""
import pytest
import torch
from mmengine.structures import BaseDataElement

from visionllm.models.llm.postprocess import SlotPredictions, StructuredPostProcessor
from visionllm.tasks import build_instruction


def detection_sample():
    instruction = build_instruction("detection", None, categories=["square", "star"], template_index=0)
    return BaseDataElement(metainfo=dict(instruction=instruction.text, img_shape=(100, 100), ori_shape=(100, 100),
                                         scale_factor=(1.0, 1.0), category_ids=[0, 1]))


def boxes_as_points(boxes):
    return torch.tensor(boxes, dtype=torch.float32).view(-1, 2, 2)


def merged(nms_iou, scores, labels, boxes):
    processor = StructuredPostProcessor(codec=None, nms_iou=nms_iou)
    part = SlotPredictions(torch.tensor(scores), torch.tensor(labels), boxes_as_points(boxes))
    return processor.merge([part], detection_sample())


BOXES = [[10, 10, 40, 40], [11, 10, 41, 40], [10, 10, 40, 40], [60, 60, 90, 90], [12, 11, 40, 41]]
SCORES = [0.6, 0.9, 0.8, 0.7, 0.3]
LABELS = [0, 0, 1, 0, 0]


def test_overlapping_instances_of_one_category_keep_only_the_best():
    result = merged(0.5, SCORES, LABELS, BOXES)
    # slot 1 (0.9) outlives slots 0 and 4, its overlapping squares; the star (2) and the far square (3) stay
    assert result.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert result.labels.tolist() == [0, 1, 0]
    assert result.bboxes.tolist() == [BOXES[1], BOXES[2], BOXES[3]]


def test_without_nms_every_slot_stays_in_score_order():
    result = merged(None, SCORES, LABELS, BOXES)
    assert result.scores.tolist() == pytest.approx(sorted(SCORES, reverse=True))


def test_a_looser_threshold_keeps_boxes_that_overlap_less():
    boxes = [[0, 0, 40, 40], [20, 0, 60, 40]]  # IoU 1/3
    assert len(merged(0.5, [0.9, 0.8], [0, 0], boxes)) == 2
    assert len(merged(0.3, [0.9, 0.8], [0, 0], boxes)) == 1


def test_bad_nms_iou_is_refused():
    with pytest.raises(ValueError, match="nms_iou"):
        StructuredPostProcessor(codec=None, nms_iou=0.0)
