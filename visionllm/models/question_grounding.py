"""Questions about named objects, answered through the model's own grounding.

"Is the orange star left of the pink circle?" needs the two named objects and where they lie from
each other; "what color is the star?" needs the named object and what it looks like. The model's
grounding task finds a named object far more reliably than the answer does inside the LLM, and the
region parts answer about boxes: the region relations compare two (``RegionRelations``), the
region appearance reads one (``RegionAppearance``). Before such a question is answered, the model
therefore grounds each name (the grounding task's evaluation phrasing, one extra pass of the
tokenizer and the decoder for all names of a batch), and the question is answered as the region
question about the best boxes: "is <region> left of <region>?" or "what colour is <region>?".
Other questions are answered as asked.
"""
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch

from visionllm.tasks import build_instruction, task_of_instruction

_NAME = r"(the [a-z][a-z -]*?)"
# "is the A (to the | on the) left|right (side) of the B?", "is the A above|below|over|under the B?"
_RELATIONS = (
    re.compile(rf"\bis {_NAME} (?:to the |on the )?(left|right)(?: side| hand side)? of {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bis {_NAME} (above|below|over|under) {_NAME}\s*\?", re.IGNORECASE),
)
_ASKS_SIDE_OF_IMAGE = re.compile(r"\bor\b|\bthe (image|picture|photo)\b", re.IGNORECASE)
_RELATION_WORDS = {"left": "left of", "right": "right of"}
# "what / which colour is the A?", "what is the colour of the A?", "which colour does the A have?",
# "the A is what colour?" (either spelling)
_COLOURS = (
    re.compile(rf"\b(?:what|which) colou?r is {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bwhat is the colou?r of {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bwhich colou?r does {_NAME} have\s*\?", re.IGNORECASE),
    re.compile(rf"(?:^|[:.]\s*|\s){_NAME} is what colou?r\s*\?", re.IGNORECASE),
)


class GroundedQuestion(NamedTuple):
    """The names a question is about, in order, and the region question it is answered as (one
    ``<region>`` per name)."""
    names: Tuple[str, ...]
    region_question: str


def read_relation(question: str) -> Optional[Tuple[str, str, str]]:
    """``(first name, relation word, second name)`` of a question that asks whether one named
    thing lies left / right of, above / below another, or None."""
    for pattern in _RELATIONS:
        match = pattern.search(question)
        if match is not None:
            first, word, second = match.groups()
            if _ASKS_SIDE_OF_IMAGE.search(first) or _ASKS_SIDE_OF_IMAGE.search(second):
                return None  # "the left or the right side of the image" asks something else
            return first.strip(), word.lower(), second.strip()
    return None


def read_colour_question(question: str) -> Optional[str]:
    """The name of the thing whose colour ``question`` asks for, or None."""
    for pattern in _COLOURS:
        match = pattern.search(question)
        if match is not None and not match.group(1).lower().startswith(("the image", "the picture", "the photo")):
            return match.group(1).strip()
    return None


def read_question(question: str) -> Optional[GroundedQuestion]:
    """What ``question`` is answered as through grounding, or None for a question answered as asked."""
    relation = read_relation(question)
    if relation is not None:
        first, word, second = relation
        return GroundedQuestion((first, second), f"is <region> {_RELATION_WORDS.get(word, word)} <region>?")
    name = read_colour_question(question)
    if name is not None:
        return GroundedQuestion((name,), "what colour is <region>?")
    return None


class QuestionGrounding:
    """Which samples ask about named objects, their grounding samples, and the region question
    each is answered as.

    Args:
        tasks: the tasks whose questions are read (by default VQA).
    """

    def __init__(self, tasks: Sequence[str] = ("vqa",)):
        self.tasks = tuple(tasks)

    def rows(self, samples: Sequence) -> List[Tuple[int, GroundedQuestion]]:
        """``(index, what it is answered as)`` of each sample whose question is about named objects."""
        found = []
        for i, sample in enumerate(samples):
            instruction = sample.metainfo["instruction"]
            if task_of_instruction(instruction).name not in self.tasks:
                continue
            question = read_question(instruction)
            if question is not None:
                found.append((i, question))
        return found

    @staticmethod
    def grounding_sample(sample, name: str):
        """A copy of ``sample`` that asks for the grounding of ``name`` instead, on its own."""
        instruction = build_instruction("grounding", None, expression=name, template_index=0)
        ground = sample.clone()
        ground.set_metainfo(dict(instruction=instruction.text, task="grounding", categories=[name],
                                 category_ids=[0], output_format=tuple(instruction.output_format.fields),
                                 history=None, regions=None))
        return ground

    @staticmethod
    def region_question(sample, question: GroundedQuestion, grounded: Sequence) -> None:
        """Turn ``sample`` into ``question``'s region question about the best box of each of its
        grounding samples (after prediction); the asked instruction is kept as metainfo
        ``asked_instruction`` and the boxes, in pixels of the input image, as ``grounded_boxes``.
        A name with no box leaves the sample as asked."""
        boxes = []
        for ground in grounded:
            pred = ground.pred_instances
            if len(pred.scores) == 0:
                return  # nothing found: answered as asked
            box = pred.bboxes[int(torch.argmax(pred.scores))].float().cpu()
            boxes.append(torch.cat([box[:2], torch.maximum(box[2:], box[:2] + 1)]))  # a region has an area
        instruction = build_instruction("region_vqa", None, question=question.region_question, template_index=0)
        w_scale, h_scale = sample.metainfo.get("scale_factor", (1.0, 1.0))[:2]
        scale = torch.tensor([w_scale, h_scale, w_scale, h_scale])
        sample.set_metainfo(dict(asked_instruction=sample.metainfo["instruction"], instruction=instruction.text,
                                 regions=[(box * scale).tolist() for box in boxes],
                                 grounded_boxes=[box.tolist() for box in boxes]))

    @staticmethod
    def restore(sample) -> None:
        """Give a sample answered as a region question its asked instruction back."""
        if "asked_instruction" in sample.metainfo:
            sample.set_metainfo(dict(instruction=sample.metainfo["asked_instruction"], regions=None))


def build_question_grounding(config: Optional[dict]) -> Optional[QuestionGrounding]:
    """``QuestionGrounding(**config)``, or None for no config."""
    return None if config is None else QuestionGrounding(**config)
