"""Groundings checked against the model's own region answers.

"The red star" names a colour and a kind; the region parts read both about a box far more
reliably than the grounding tells two similar objects apart. After a grounding is predicted, its
best box is therefore asked "what colour is <region>?" (and "what shape is <region>?" for a kind
word) when the expression names a colour of ``colours``; when an answer disagrees, the model
detects its ``categories`` (``OwnDetections``) and the grounding becomes the best-scoring
detection of the expression's kind (any kind without one) at or above ``score_threshold`` whose
colour answer is the expression's colour. When none is, the grounding stays as predicted. One
pass each for the checks, the detections and the candidates' colours, for all groundings of a batch.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.structures import InstanceData

from visionllm.models.own_detections import OwnDetections
from visionllm.models.question_grounding import answer_words, copy_asking, region_box
from visionllm.tasks import read_instruction, task_of_instruction

COLOUR_QUESTION, SHAPE_QUESTION = "what colour is <region>?", "what shape is <region>?"


class ExpressionWords(NamedTuple):
    """The colour word and (or None) the kind word of a referring expression."""
    colour: str
    kind: Optional[str]


class GroundingVerification(OwnDetections):
    """Which groundings are checked, their region questions, and their replacement.

    Args:
        categories: the kinds the model detects (and the kind words read in expressions).
        colours: colour words the model answers "what colour is <region>?" with; only
            expressions naming one are checked.
        score_threshold: a detection is a candidate when it scores at least this.
        tasks: the tasks whose predictions are checked (by default grounding).
    """

    def __init__(self, categories: Sequence[str], colours: Sequence[str], score_threshold: float = 0.5,
                 tasks: Sequence[str] = ("grounding",)):
        super().__init__(categories, score_threshold)
        self.colours = tuple(colours)
        self.tasks = tuple(tasks)

    def words(self, expression: str) -> Optional[ExpressionWords]:
        """The first colour and kind word of ``expression``, or None without a colour word."""
        words = expression.lower().replace(",", " ").split()
        colour = next((word for word in words if word in self.colours), None)
        kind = next((word for word in words if word in self.categories), None)
        return None if colour is None else ExpressionWords(colour, kind)

    def rows(self, predicted: Sequence) -> List[Tuple[int, ExpressionWords]]:
        """``(index, expression words)`` of each predicted grounding that names a colour and
        has a box."""
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
        """Copies of ``sample`` asking the colour (and, with a kind word, the shape) of its best box."""
        questions = [COLOUR_QUESTION] + ([SHAPE_QUESTION] if words.kind else [])
        return [copy_asking(sample, question, [self.best_box(sample)]) for question in questions]

    @staticmethod
    def agrees(answered: Sequence, words: ExpressionWords) -> bool:
        """Whether the answered checks name the expression's colour (and kind)."""
        expected = [words.colour] + ([words.kind] if words.kind else [])
        return [answer_words(check.get("pred_text")) for check in answered] == expected

    def candidates(self, sample, detected, words: ExpressionWords) -> Tuple[List, List]:
        """Detections of the expression's kind at or above the threshold, best first, as
        ``(instances, copies of sample asking each one's colour)``."""
        present = self.present(detected)
        order = torch.argsort(present.scores, descending=True).tolist()
        chosen = [present[j] for j in order
                  if words.kind is None or self.categories[int(present.labels[j])] == words.kind]
        return chosen, [copy_asking(sample, COLOUR_QUESTION, [region_box(instance.bboxes[0])]) for instance in chosen]

    @staticmethod
    def replace(sample, chosen: Sequence, answered: Sequence, words: ExpressionWords) -> None:
        """Make the first of ``chosen`` whose colour answer is the expression's colour the
        grounding of ``sample`` (metainfo ``replaced_grounding`` keeps the predicted box)."""
        for instance, colour in zip(chosen, answered):
            if answer_words(colour.get("pred_text")) == words.colour:
                pred = sample.pred_instances
                sample.set_metainfo(dict(replaced_grounding=GroundingVerification.best_box(sample).tolist()))
                sample.pred_instances = InstanceData(bboxes=instance.bboxes.to(pred.bboxes),
                                                     scores=instance.scores.to(pred.scores),
                                                     labels=torch.zeros_like(pred.labels[:1]))
                return


def build_grounding_verification(config: Optional[dict]) -> Optional[GroundingVerification]:
    """``GroundingVerification(**config)``, or None for no config."""
    return None if not config else GroundingVerification(**config)
