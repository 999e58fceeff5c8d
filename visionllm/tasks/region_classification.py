"""Region classification: which of the names an instruction lists is the object at ``<region>``."""
import random
from typing import List, Optional, Sequence, Tuple

from visionllm.instructions.instruction import Instruction
from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.registry import TASKS

from .region_reading import region_task_of
from .spec import InstructionParts, TaskSpec, check_text, quote


def format_choices(names: Sequence[str]) -> str:
    """The names as the instructions list them, quoted: ``"circle", "star", "square"``."""
    return ", ".join(quote(name) for name in names)


@TASKS.register_module(name="region_classification")
class RegionClassificationTask(TaskSpec):
    """Free text: the instruction lists the candidate names (quoted, in plain text); ``target_text`` is the
    right one. The names are words of the prompt, not class tokens (``categories`` stays empty)."""

    name = "region_classification"
    metric = dict(type="RegionClassificationAccuracy")
    templates = (
        "<image> Which of these categories is <region>: {names}? Answer with one name.",
        "<image> Classify <region> as one of: {names}.",
        "Which one of {names} is the object at <region> in <image>?",
        "<image> Choose the label of <region> from the options {names}.",
        "In <image>, <region> shows one of these: {names}. Which one?",
        "<image> Options: {names}. Which option is <region>?",
        "Pick the category of the object in <region> of <image> from {names}.",
        "<image> Classify the object at <region>. Categories: {names}.",
        "Look at <region> in <image>. Which of {names} is it?",
        "<image> Candidates: {names}. Name the candidate that <region> shows.",
        "Assign <region> of <image> one of the labels {names}.",
        "<image> From the choices {names}, what is <region>?",
        "Which category among {names} does the object at <region> in <image> belong to?",
        "<image> Label <region> with one of {names}.",
        "Categorise the object at <region> in <image> as one of {names}.",
        "<image> Is <region> one of {names}? Give the matching name.",
    )

    def fields(self, categories: Optional[Sequence[str]] = None, **_):
        if not categories:
            raise ValueError("region_classification instructions need at least one category name")
        names = [check_text(name, "category name") for name in categories]
        if any(REGION_PLACEHOLDER in name for name in names):
            raise ValueError(f"category names may not contain {REGION_PLACEHOLDER}")
        return dict(names=format_choices(names)), [], None

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """The candidates are the sample's ``region_categories``; ``target_text`` its name."""
        results.setdefault("target_text", (results.get("gt_texts") or [None])[0])
        return self.instruction(rng, template_index, categories=results["region_categories"]), []

    def recognises(self, parts: InstructionParts) -> bool:
        return region_task_of(parts) == self.name
