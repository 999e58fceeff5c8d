"""Groundings checked against the model's own region answers and detections.

"The red star" names a colour and a kind; the region parts read both about a box far more
reliably than the grounding tells two similar objects apart. After a grounding is predicted, its
best box is therefore asked "what colour is <region>?" (and "what shape is <region>?" for a kind
word) when the expression names a colour of ``colours``; when an answer disagrees, the model
detects its ``categories`` (``OwnDetections``) and the grounding becomes the best-scoring
detection of the expression's kind (any kind without one) at or above ``score_threshold`` whose
colour answer is the expression's colour. When none is, the grounding stays as predicted.

"The leftmost star", "the star at the top", "the big star" (an *extreme* among things of a kind,
read by ``EXTREMES``; not a relation to another object such as "the star left of the square") are
resolved from the detections directly: the grounding becomes the detection of the kind lying
furthest that way (the largest or smallest), among those whose colour answer is the expression's
colour when it names one. "The star left of the red square" (a relation to an anchor, the
referent's kind being on one side of it only) grounds the anchor, "the red square", first and
becomes the best-scoring detected star whose centre lies beyond the anchor's that way. One pass
each for the checks, the anchors' groundings, the detections and the candidates' colours, for
all groundings of a batch.
"""
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.structures import InstanceData

from visionllm.models.own_detections import OwnDetections
from visionllm.models.question_grounding import QuestionGrounding, answer_words, copy_asking, region_box
from visionllm.tasks import read_instruction, task_of_instruction

COLOUR_QUESTION, SHAPE_QUESTION = "what colour is <region>?", "what shape is <region>?"
# Words that place one thing among things of its kind; the first that matches names the extreme.
EXTREMES = (("left", r"leftmost|on the left|furthest to the left|farthest to the left"),
            ("right", r"rightmost|on the right|furthest to the right|farthest to the right"),
            ("top", r"topmost|uppermost|highest|at the top"),
            ("bottom", r"bottommost|lowest|at the bottom"),
            ("big", r"big|bigger|biggest|large|larger|largest"),
            ("small", r"small|smaller|smallest|little|tiny"))
# An expression placing its referent against another object is not an extreme among its kind;
# the relations with a direction name the side of the anchor the referent lies on.
_RELATION = re.compile(r"\b(?:above|below|under|beneath|(?:left|right) of|next to|beside)\b")
_RELATION_SIDES = {"above": "top", "below": "bottom", "under": "bottom", "beneath": "bottom",
                   "left of": "left", "right of": "right"}


class ExpressionWords(NamedTuple):
    """The colour word, the kind word and the extreme (``EXTREMES``) of a referring expression,
    and for a relation to another object the side of it (``relation``: left, right, top, bottom)
    and its expression (``anchor``); each None when it names none."""
    colour: Optional[str]
    kind: Optional[str]
    extreme: Optional[str] = None
    relation: Optional[str] = None
    anchor: Optional[str] = None

    @property
    def placed(self) -> bool:
        """Whether the referent is placed among things (an extreme or a relation), which the
        detections resolve without checking the predicted box."""
        return self.extreme is not None or self.relation is not None


def extreme_of(expression: str) -> Optional[str]:
    """The extreme (a name of ``EXTREMES``) ``expression`` places its referent at, or None."""
    text = expression.lower()
    if _RELATION.search(text):
        return None
    return next((name for name, words in EXTREMES if re.search(rf"\b(?:{words})\b", text)), None)


def towards(boxes: torch.Tensor, extreme: str) -> torch.Tensor:
    """How far each of ``boxes`` ``[N, 4]`` (x1, y1, x2, y2, y downwards) lies towards ``extreme``
    (left, right, top, bottom: its centre's coordinate, signed; big, small: its area, signed)."""
    if extreme in ("big", "small"):
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return area if extreme == "big" else -area
    axis, sign = dict(left=(0, -1), right=(0, 1), top=(1, -1), bottom=(1, 1))[extreme]
    return sign * (boxes[:, axis] + boxes[:, axis + 2]) / 2


def extreme_order(boxes: torch.Tensor, extreme: str) -> List[int]:
    """Indices of ``boxes`` ``[N, 4]`` (x1, y1, x2, y2, y downwards) from the one lying furthest
    towards ``extreme`` (or the largest / smallest) to the least."""
    return torch.argsort(towards(boxes, extreme), descending=True, stable=True).tolist()


class GroundingVerification(OwnDetections):
    """Which groundings are checked, their region questions, and their replacement.

    Args:
        categories: the kinds the model detects (and the kind words read in expressions).
        colours: colour words the model answers "what colour is <region>?" with; expressions
            naming one are checked (and extremes read among the things of that colour).
        score_threshold: a detection is a candidate when it scores at least this.
        tasks: the tasks whose predictions are checked (by default grounding).
        overlap_iou: of present detections overlapping by more than this IoU only the best-scoring
            one counts, whatever its kind (None: each kind on its own; ``OwnDetections``).
    """

    def __init__(self, categories: Sequence[str], colours: Sequence[str], score_threshold: float = 0.5,
                 tasks: Sequence[str] = ("grounding",), overlap_iou: Optional[float] = None):
        super().__init__(categories, score_threshold, overlap_iou)
        self.colours = tuple(colours)
        self.tasks = tuple(tasks)

    def words(self, expression: str) -> Optional[ExpressionWords]:
        """The first colour and kind word of ``expression`` and its extreme or relation, or None when it
        names no colour, no extreme of a kind and no relation of a kind to an anchor. In "the
        star left of the red box" the words before the relation describe the referent ("the
        star") and those after it the anchor ("the red box")."""
        text = expression.lower()
        relation = _RELATION.search(text)
        words = text[:relation.start() if relation else None].replace(",", " ").split()
        colour = next((word for word in words if word in self.colours), None)
        kind = next((word for word in words if word in self.categories), None)
        if relation is not None:
            side, anchor = _RELATION_SIDES.get(relation.group(0)), text[relation.end():].strip(" .,")
            named = set(anchor.replace(",", " ").split()) & {*self.colours, *self.categories}
            if side is not None and kind is not None and named:
                return ExpressionWords(colour, kind, relation=side, anchor=anchor)
        extreme = extreme_of(expression) if kind is not None else None
        return None if colour is None and extreme is None else ExpressionWords(colour, kind, extreme)

    def rows(self, predicted: Sequence) -> List[Tuple[int, ExpressionWords]]:
        """``(index, expression words)`` of each predicted grounding that names a colour, an
        extreme of a kind or a relation of a kind to an anchor, and has a box."""
        found = []
        for i, sample in enumerate(predicted):
            instruction = sample.metainfo["instruction"]
            if task_of_instruction(instruction).name not in self.tasks or len(sample.pred_instances.scores) == 0:
                continue
            words = self.words(" ".join(read_instruction(instruction, strict=False).categories))
            if words is not None:
                found.append((i, words))
        return found

    @staticmethod
    def best_box(sample) -> torch.Tensor:
        """The best-scoring predicted box of ``sample``, as a region."""
        pred = sample.pred_instances
        return region_box(pred.bboxes[int(torch.argmax(pred.scores))])

    def checks(self, sample, words: ExpressionWords) -> List:
        """Copies of ``sample`` asking the colour (and, with a kind word, the shape) of its best
        box; none for an extreme or a relation, which the detections resolve whatever the box is."""
        if words.placed:
            return []
        questions = [COLOUR_QUESTION] + ([SHAPE_QUESTION] if words.kind else [])
        return [copy_asking(sample, question, [self.best_box(sample)]) for question in questions]

    @staticmethod
    def agrees(answered: Sequence, words: ExpressionWords) -> bool:
        """Whether the answered checks name the expression's colour (and kind); never for an
        extreme or a relation."""
        if words.placed:
            return False
        expected = [words.colour] + ([words.kind] if words.kind else [])
        return [answer_words(check.get("pred_text")) for check in answered] == expected

    @staticmethod
    def anchor_groundings(sample, words: ExpressionWords) -> List:
        """For a relation, a copy of ``sample`` grounding its anchor on its own; else none."""
        return [] if words.anchor is None else [QuestionGrounding.grounding_sample(sample, words.anchor)]

    def candidates(self, sample, detected, words: ExpressionWords, anchor: Sequence = ()) -> Tuple[List, List]:
        """Detections of the expression's kind at or above the threshold, best first (for an
        extreme, furthest that way first; for a relation, only those whose centre lies beyond
        the centre of ``anchor``'s best box, the anchor's grounding sample after prediction, that
        way), as ``(instances, copies of sample asking each one's colour)``; no questions when
        the expression names no colour."""
        present = self.present(detected)
        order = (extreme_order(present.bboxes, words.extreme) if words.extreme is not None
                 else torch.argsort(present.scores, descending=True).tolist())
        if words.relation is not None:
            beyond = self._beyond(present.bboxes, anchor, words.relation)
            order = [j for j in order if beyond[j]]
        chosen = [present[j] for j in order
                  if words.kind is None or self.categories[int(present.labels[j])] == words.kind]
        if words.colour is None:
            return chosen, []
        return chosen, [copy_asking(sample, COLOUR_QUESTION, [region_box(instance.bboxes[0])]) for instance in chosen]

    @staticmethod
    def _beyond(boxes: torch.Tensor, anchor: Sequence, side: str) -> torch.Tensor:
        """Which centres of ``boxes`` lie beyond the centre of the best box of ``anchor`` (a list
        of one predicted grounding sample) towards ``side``; none without an anchor box."""
        if not anchor or len(anchor[0].pred_instances.scores) == 0:
            return torch.zeros(len(boxes), dtype=torch.bool)
        pred = anchor[0].pred_instances
        anchor_box = pred.bboxes[int(torch.argmax(pred.scores))][None].to(boxes)
        return towards(boxes, side) > towards(anchor_box, side)

    @staticmethod
    def replace(sample, chosen: Sequence, answered: Sequence, words: ExpressionWords) -> None:
        """Make the first of ``chosen`` whose colour answer is the expression's colour (the first
        of them when it names none) the grounding of ``sample`` (metainfo ``replaced_grounding``
        keeps the predicted box)."""
        colours = ([None] * len(chosen) if words.colour is None
                   else [answer_words(colour.get("pred_text")) for colour in answered])
        for instance, colour in zip(chosen, colours):
            if colour == words.colour:
                pred = sample.pred_instances
                sample.set_metainfo(dict(replaced_grounding=GroundingVerification.best_box(sample).tolist()))
                sample.pred_instances = InstanceData(bboxes=instance.bboxes.to(pred.bboxes),
                                                     scores=instance.scores.to(pred.scores),
                                                     labels=torch.zeros_like(pred.labels[:1]))
                return


def build_grounding_verification(config: Optional[dict]) -> Optional[GroundingVerification]:
    """``GroundingVerification(**config)``, or None for no config."""
    return None if not config else GroundingVerification(**config)
