"""The model's own detections of a fixed category list, asked for before another answer.

Captions (``CaptionGrounding``) and count questions (``QuestionCounting``) lean on the detector,
which reads an image far more reliably than free text does (each category is matched against each
image token). Both ask for the same thing: a copy of the sample that detects ``categories`` in the
detection task's evaluation phrasing, decoding only the slots that can reach ``score_threshold``.
The detector may read one object as two kinds (a box for "square" and one for "diamond" on the same
object); with ``overlap_iou`` set, of detections overlapping more than that only the best-scoring
one is present, whatever its kind, so that one object is counted (and named) once.
"""
from typing import Optional, Sequence

from torchvision.ops import nms

from visionllm.models.question_grounding import inner_copy
from visionllm.tasks import build_instruction


class OwnDetections:
    """The detection sample for ``categories`` and which detections count as present.

    Args:
        categories: the category names detected (e.g. a dataset's classes).
        score_threshold: a detection counts as present when it scores at least this.
        overlap_iou: when set, a detection whose box overlaps a better-scoring present one (of
            any kind) by more than this IoU is not present (None: every kind kept on its own).
    """

    def __init__(self, categories: Sequence[str], score_threshold: float = 0.5, overlap_iou: Optional[float] = None):
        names = [str(name) for name in categories]
        if not names:
            raise ValueError(f"{type(self).__name__} needs at least one category")
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__} categories must be distinct")
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if overlap_iou is not None and not 0.0 < float(overlap_iou) <= 1.0:
            raise ValueError(f"overlap_iou must be in (0, 1] or None, got {overlap_iou}")
        self.categories = names
        self.score_threshold = float(score_threshold)
        self.overlap_iou = None if overlap_iou is None else float(overlap_iou)
        instruction = build_instruction("detection", None, categories=names, template_index=0)
        self.instruction = instruction.text
        self.output_format = tuple(instruction.output_format.fields)

    def detection_sample(self, sample):
        """A copy of ``sample`` that asks for the detection of ``categories`` instead, on its
        own (no conversation history), decoding only the slots that can reach the threshold."""
        detect = inner_copy(sample)
        detect.set_metainfo(dict(instruction=self.instruction, task="detection", categories=list(self.categories),
                                 category_ids=list(range(len(self.categories))),
                                 output_format=self.output_format, history=None,
                                 score_thr=self.score_threshold))
        return detect

    def present(self, detected):
        """The predicted instances of ``detected`` (a detection sample after prediction) that
        score at least the threshold (and, with ``overlap_iou``, overlap no better one), in
        their predicted order."""
        pred = detected.pred_instances
        pred = pred[pred.scores >= self.score_threshold]
        if self.overlap_iou is None or len(pred) < 2:
            return pred
        keep = nms(pred.bboxes.float(), pred.scores.float(), self.overlap_iou)
        return pred[keep.sort().values]
