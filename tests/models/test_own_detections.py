"""Which of the model's own detections count as present (visionllm.models.own_detections): the score
threshold, with ``overlap_iou`` one detection per object whatever its kind, and inner copies."""
import pytest
import torch

from mmdet.structures import DetDataSample
from predicted_samples import detections
from visionllm.models.caption_grounding import CaptionGrounding
from visionllm.models.own_detections import OwnDetections
from visionllm.models.question_counting import CountQuestion, QuestionCounting

KINDS = ["circle", "star", "box"]


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("overlap_iou", [0.0, -0.1, 1.5])
def test_overlap_iou_must_be_a_fraction(overlap_iou):
    with pytest.raises(ValueError, match="overlap_iou"):
        OwnDetections(KINDS, overlap_iou=overlap_iou)


def test_without_overlap_iou_every_detection_at_the_threshold_is_present():
    detected = detections([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], [0, 1, 2], [0.9, 0.5, 0.49])
    present = OwnDetections(KINDS, score_threshold=0.5).present(detected)
    assert present.labels.tolist() == [0, 1] and present.scores.tolist() == pytest.approx([0.9, 0.5])


def test_with_overlap_iou_the_best_of_overlapping_detections_is_present_whatever_its_kind():
    # a star read twice (as a star and as a circle), a box beside it, another star far away
    boxes = [[0, 0, 10, 10], [1, 0, 10, 10], [8, 0, 18, 10], [50, 50, 60, 60], [0, 0, 10, 9]]
    labels, scores = [1, 0, 2, 1, 2], [0.7, 0.8, 0.9, 0.6, 0.3]
    assert _iou(boxes[0], boxes[1]) == pytest.approx(0.9) and _iou(boxes[0], boxes[2]) < 0.25
    present = OwnDetections(KINDS, score_threshold=0.5, overlap_iou=0.5).present(detections(boxes, labels, scores))
    # the star under the better-scoring circle goes; the rest stays, in its predicted order
    assert present.bboxes.tolist() == [boxes[1], boxes[2], boxes[3]]
    assert present.labels.tolist() == [0, 2, 1]
    # a threshold above their overlap keeps both readings
    loose = OwnDetections(KINDS, score_threshold=0.5, overlap_iou=0.95).present(detections(boxes, labels, scores))
    assert loose.labels.tolist() == [1, 0, 2, 1]


def test_counts_and_captions_see_one_object_once():
    boxes = [[0, 0, 10, 10], [1, 0, 10, 10], [30, 30, 40, 40]]
    detected = detections(boxes, [1, 0, 1], [0.7, 0.8, 0.9])  # the first star is also read as a circle
    for overlap_iou, shapes, stars in [(None, "3", "2"), (0.5, "2", "1")]:
        counting = QuestionCounting(KINDS, overlap_iou=overlap_iou)
        for question, count in [(CountQuestion(None, None), shapes), (CountQuestion(None, "star"), stars)]:
            sample = DetDataSample()
            sample.set_metainfo(dict(instruction="<image> Answer the question: how many?", img_shape=(64, 64),
                                     scale_factor=(1.0, 1.0)))
            counting.count(sample, question, detected)
            assert sample.composed_answer == count
    assert "circle" not in CaptionGrounding(KINDS).absent_words(detected)
    # the circle reading only wins where it scores better; here the star's does
    assert "circle" in CaptionGrounding(KINDS, overlap_iou=0.5).absent_words(detections(boxes, [1, 0, 1],
                                                                                       [0.9, 0.8, 0.9]))


def test_inner_copies_drop_an_answer_already_composed():
    from visionllm.models.question_grounding import QuestionGrounding, copy_asking
    sample = DetDataSample()
    sample.set_metainfo(dict(instruction="<image> Answer the question: is the star left of the circle?",
                             img_shape=(64, 96), composed_answer="no"))
    copies = [CaptionGrounding(["star"]).detection_sample(sample), QuestionGrounding.grounding_sample(sample, "the star"),
              copy_asking(sample, "what colour is <region>?", [torch.tensor([0.0, 0.0, 9.0, 9.0])])]
    assert all("composed_answer" not in copy.metainfo for copy in copies)
    assert sample.composed_answer == "no"  # the sample keeps its own
