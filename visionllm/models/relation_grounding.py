"""Relation questions about named objects, answered through the model's own grounding.

"Is the orange star left of the pink circle?" needs the two named objects and where they lie from
each other. The model's grounding task finds a named object far more reliably than the answer
does inside the LLM, and the region relations (``RegionRelations``) compare two boxes. Before such
a question is answered, the model therefore grounds each of the two names (the grounding task's
evaluation phrasing, one extra pass of the tokenizer and the decoder for both), and the question
is answered as the region question "is <region> left of <region>?" about the two best boxes.
Questions that state no such relation are answered as asked.
"""
import re
from typing import List, Optional, Sequence, Tuple

import torch

from visionllm.tasks import build_instruction, task_of_instruction

# "is the A (to the | on the) left|right (side) of the B?", "is the A above|below|over|under the B?"
_NAME = r"(the [a-z][a-z -]*?)"
_RELATIONS = (
    re.compile(rf"\bis {_NAME} (?:to the |on the )?(left|right)(?: side| hand side)? of {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bis {_NAME} (above|below|over|under) {_NAME}\s*\?", re.IGNORECASE),
)
_ASKS_SIDE_OF_IMAGE = re.compile(r"\bor\b|\bthe (image|picture|photo)\b", re.IGNORECASE)


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


class RelationGrounding:
    """Which samples are relation questions, their grounding samples, and the region question
    each is answered as.

    Args:
        tasks: the tasks whose questions are read for relations (by default VQA).
    """

    def __init__(self, tasks: Sequence[str] = ("vqa",)):
        self.tasks = tuple(tasks)

    def rows(self, samples: Sequence) -> List[Tuple[int, Tuple[str, str, str]]]:
        """``(index, relation)`` of each sample whose question states a relation between two names."""
        found = []
        for i, sample in enumerate(samples):
            instruction = sample.metainfo["instruction"]
            if task_of_instruction(instruction).name not in self.tasks:
                continue
            relation = read_relation(instruction)
            if relation is not None:
                found.append((i, relation))
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
    def region_question(sample, relation: Tuple[str, str, str], grounded: Sequence) -> None:
        """Turn ``sample`` into the region question of ``relation`` about the best box of each of
        its two grounding samples (after prediction); the asked instruction is kept as metainfo
        ``asked_instruction`` and the boxes, in pixels of the input image, as ``relation_boxes``."""
        boxes = []
        for ground in grounded:
            pred = ground.pred_instances
            if len(pred.scores) == 0:
                return  # nothing found: answered as asked
            box = pred.bboxes[int(torch.argmax(pred.scores))].float().cpu()
            boxes.append(torch.cat([box[:2], torch.maximum(box[2:], box[:2] + 1)]))  # a region has an area
        _, word, _ = relation
        relation_words = {"left": "left of", "right": "right of"}
        question = f"is <region> {relation_words.get(word, word)} <region>?"
        instruction = build_instruction("region_vqa", None, question=question, template_index=0)
        w_scale, h_scale = sample.metainfo.get("scale_factor", (1.0, 1.0))[:2]
        scale = torch.tensor([w_scale, h_scale, w_scale, h_scale])
        sample.set_metainfo(dict(asked_instruction=sample.metainfo["instruction"], instruction=instruction.text,
                                 regions=[(box * scale).tolist() for box in boxes],
                                 relation_boxes=[box.tolist() for box in boxes]))

    @staticmethod
    def restore(sample) -> None:
        """Give a sample answered as a region question its asked instruction back."""
        if "asked_instruction" in sample.metainfo:
            sample.set_metainfo(dict(instruction=sample.metainfo["asked_instruction"], regions=None))


def build_relation_grounding(config: Optional[dict]) -> Optional[RelationGrounding]:
    """``RelationGrounding(**config)``, or None for no config."""
    return None if config is None else RelationGrounding(**config)
