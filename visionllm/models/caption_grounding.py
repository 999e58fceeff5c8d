"""Captions grounded in the model's own detections.

A caption names objects from the image tokens in one pass of free text, and a small model names
kinds the image does not hold (CHAIR, ``visionllm.evaluation.hallucination``). Its detector reads
the same image far more reliably (each category is matched against each image token). Before a
caption is written, the model therefore detects ``categories`` in the image (the detection
task's evaluation phrasing, one extra pass of the tokenizer and the decoder), and the caption
may not name, in the singular or the plural, a category with no detection scoring at least
``score_threshold`` (``BannedWords``). Nothing else of the caption is constrained: counts,
colours and relations remain the caption's own.
"""
from typing import List, Optional, Sequence

from visionllm.models.own_detections import OwnDetections
from visionllm.tasks import task_of_instruction
from visionllm.utils.english import plural


class CaptionGrounding(OwnDetections):
    """Which samples are grounded, their detection samples, and the words their captions may
    not write.

    Args:
        categories: the category names detected before captioning (e.g. a dataset's classes).
        score_threshold: a category counts as present with a detection scoring at least this.
        tasks: the tasks whose text is grounded (by default captions).
        overlap_iou: of present detections overlapping by more than this IoU only the best-scoring
            one counts, whatever its kind (None: each kind on its own; ``OwnDetections``).
    """

    def __init__(self, categories: Sequence[str], score_threshold: float = 0.5,
                 tasks: Sequence[str] = ("caption",), overlap_iou: Optional[float] = None):
        super().__init__(categories, score_threshold, overlap_iou)
        self.tasks = tuple(tasks)

    def rows(self, samples: Sequence) -> List[int]:
        """Indices of the samples whose instruction asks for a grounded task."""
        return [i for i, sample in enumerate(samples)
                if task_of_instruction(sample.metainfo["instruction"]).name in self.tasks]

    def absent_words(self, detected) -> List[str]:
        """The words (each category in its singular and plural forms) a caption of the image of
        ``detected`` (a detection sample after prediction) may not write."""
        present = {int(label) for label in self.present(detected).labels.tolist()}
        absent = [name for index, name in enumerate(self.categories) if index not in present]
        return sorted({form for name in absent for form in (name, plural(name))})


def build_caption_grounding(config: Optional[dict]) -> Optional[CaptionGrounding]:
    """``CaptionGrounding(**config)``, or None for no config."""
    return None if not config else CaptionGrounding(**config)
