"""Captions grounded in the model's own detections.

A caption names objects from the image tokens in one pass of free text, and a small model names
kinds the image does not hold (CHAIR, ``visionllm.evaluation.hallucination``). Its detector reads
the same image far more reliably (each category is matched against each image token). Before a
caption is written, the model therefore detects ``categories`` in the image (the detection
task's evaluation phrasing, one extra pass of the tokenizer and the decoder), and the caption
may not name, in the singular or the plural, a category with no detection scoring at least
``score_threshold`` (``BannedWords``). Nothing else of the caption is constrained: counts,
colours and relations remain the caption's own.

With ``compose=True`` the caption is written from the detections instead: the present ones (one
per object with ``overlap_iou``) read left to right, each named by its kind and by the model's
answer to "what colour is <region>?" about its box (one more pass for all boxes of a batch) when
that answer is one of ``colours``; equal names are counted ("two red squares") and the names
listed ("a red square, two blue circles and a star"); an image with none gets ``empty_caption``.
What the caption names is then exactly what the model detects and the colours it reads. A
composed caption follows the style the instruction asks for (``CaptionTask.requested_style``):
the count alone ("five shapes"), the count then the list, the kinds without colours (no colour
pass), or the leftmost detection to the left of the rightmost one well apart from it (of
another name where one is).
"""
from typing import List, Optional, Sequence

from visionllm.models.own_detections import OwnDetections
from visionllm.models.question_counting import COLOUR_QUESTION
from visionllm.models.question_grounding import answer_words, copy_asking, region_box
from visionllm.tasks import get_task, task_of_instruction
from visionllm.utils.english import count_phrase, join, plural


# Caption styles that name no colour: their composed captions ask no colour question.
COLOURLESS_STYLES = ("kinds", "count")


class CaptionGrounding(OwnDetections):
    """Which samples are grounded, their detection samples, and the words their captions may
    not write.

    Args:
        categories: the category names detected before captioning (e.g. a dataset's classes).
        score_threshold: a category counts as present with a detection scoring at least this.
        tasks: the tasks whose text is grounded (by default captions).
        overlap_iou: of present detections overlapping by more than this IoU only the best-scoring
            one counts, whatever its kind (None: each kind on its own; ``OwnDetections``).
        compose: write the caption from the detections and their colour answers instead of
            constraining the caption the LLM writes.
        colours: the colour words a composed caption names (an answer outside them is left out;
            none: kinds alone, without the colour pass).
        empty_caption: the composed caption of an image without a present detection.
        colour_threshold: a colour answer is named only when the model gave it at least this
            probability (``pred_text_probability``); below, the kind alone.
        count_noun: what a composed count calls any object ("five shapes").
        relation_margin: a composed relation needs the two centres this fraction of the image
            width apart (else the caption is the list).
    """

    def __init__(self, categories: Sequence[str], score_threshold: float = 0.5,
                 tasks: Sequence[str] = ("caption",), overlap_iou: Optional[float] = None,
                 compose: bool = False, colours: Sequence[str] = (), empty_caption: str = "an empty background",
                 colour_threshold: float = 0.0, count_noun: str = "object", relation_margin: float = 0.08):
        super().__init__(categories, score_threshold, overlap_iou)
        if compose and not str(empty_caption).strip():
            raise ValueError("a composed caption needs a non-empty empty_caption")
        if not str(count_noun).strip():
            raise ValueError("count_noun must be a word, e.g. 'object'")
        self.tasks = tuple(tasks)
        self.compose = bool(compose)
        self.colours = tuple(colours)
        self.empty_caption = str(empty_caption)
        self.colour_threshold = float(colour_threshold)
        self.count_noun = str(count_noun).strip()
        self.relation_margin = float(relation_margin)

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

    def colour_questions(self, sample, detected) -> List:
        """For a composed caption: the present detections of ``detected`` (``sample``'s detection
        sample after prediction) left to right, kept on ``sample`` as metainfo ``grounded_boxes``
        and ``grounded_labels``, and one copy of ``sample`` per detection asking its colour
        (answer them, then :meth:`write`)."""
        present = self.present(detected)
        order = sorted(range(len(present)), key=lambda i: (float(present.bboxes[i][0] + present.bboxes[i][2]), i))
        boxes = [region_box(present.bboxes[i]) for i in order]
        sample.set_metainfo(dict(grounded_boxes=[box.tolist() for box in boxes],
                                 grounded_labels=[int(present.labels[i]) for i in order]))
        if not self.colours or requested_style(sample) in COLOURLESS_STYLES:  # kinds alone: nothing to ask
            return []
        return [copy_asking(sample, COLOUR_QUESTION, [box]) for box in boxes]

    def write(self, sample, answered: Sequence) -> None:
        """Put on ``sample`` (metainfo ``composed_answer``) the caption listing its grounded
        detections, each with its colour answer from ``answered`` (the predicted copies
        :meth:`colour_questions` returned) when that is one of ``colours`` and was given with at
        least ``colour_threshold`` probability, in the style the instruction asks for; the name of
        each box ("square", "red square") goes to metainfo ``grounded_names``."""
        said = [answer_words(colour.get("pred_text"))
                if colour.get("pred_text_probability", 1.0) >= self.colour_threshold else "" for colour in answered]
        names = []
        for index, label in enumerate(sample.metainfo["grounded_labels"]):
            kind = self.categories[label]
            colour = said[index] if said else ""
            names.append(f"{colour} {kind}" if colour and colour in self.colours else kind)
        sample.set_metainfo(dict(composed_answer=self._caption(sample, names), grounded_names=names))

    def _caption(self, sample, names: List[str]) -> str:
        """The caption of the boxes named ``names`` (left to right) in ``sample``'s requested style."""
        if not names:
            return self.empty_caption
        counts = {name: names.count(name) for name in names}  # first-seen order
        listed = join(count_phrase(count, name) for name, count in counts.items())
        style = requested_style(sample)
        if style == "count":
            return count_phrase(len(names), self.count_noun)
        if style == "count_objects":
            return f"{count_phrase(len(names), self.count_noun)}: {listed}"
        if style == "relation":
            boxes = sample.metainfo["grounded_boxes"]
            margin = 2 * self.relation_margin * sample.metainfo["ori_shape"][1]  # between centres, doubled
            apart = [k for k in range(len(names) - 1, 0, -1)
                     if boxes[k][0] + boxes[k][2] - boxes[0][0] - boxes[0][2] > margin]
            if apart:  # the leftmost and the rightmost well apart from it, of another name if one is
                right = next((k for k in apart if names[k] != names[0]), apart[0])
                return f"{count_phrase(1, names[0])} to the left of {count_phrase(1, names[right])}"
        return listed


def requested_style(sample) -> Optional[str]:
    """The caption style ``sample``'s instruction asks for (``CaptionTask.requested_style``)."""
    return get_task("caption").requested_style(sample.metainfo["instruction"])


def build_caption_grounding(config: Optional[dict]) -> Optional[CaptionGrounding]:
    """``CaptionGrounding(**config)``, or None for no config."""
    return None if not config else CaptionGrounding(**config)
