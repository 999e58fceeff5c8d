"""Region captioning (referring-expression generation): a short phrase naming the object at a
``<region>``, e.g. "the small red star on the left"."""
import random
from typing import List, Optional, Tuple

from visionllm.instructions.instruction import Instruction
from visionllm.registry import TASKS

from .region_reading import region_task_of
from .spec import InstructionParts, TaskSpec


@TASKS.register_module(name="region_caption")
class RegionCaptionTask(TaskSpec):
    """Free text about the region: any request with ``<region>`` that neither asks a question nor
    offers names to choose from. ``gt_texts`` are the object's references."""

    name = "region_caption"
    metric = dict(type="RegionCaptionMetric")
    templates = (
        "<image> Describe <region> in a short phrase.",
        "<image> Describe the object in <region>.",
        "Give a short description of the object at <region> in <image>.",
        "<image> Write a referring expression for <region>.",
        "In <image>, describe what is inside <region>.",
        "Look at <region> in <image> and describe the object there in a few words.",
        "<image> Briefly describe the shape at <region>.",
        "Write a short phrase that singles out the object in <region> of <image>.",
        "<image> Refer to the object at <region> with a short description.",
        "Describe the thing marked by <region> in the picture <image>.",
        "<image> Please describe <region>.",
        "What is at <region> in <image>? Describe it briefly.",
        "<image> Caption the region <region>.",
        "Summarise the object inside <region> of <image> in a phrase.",
        "<image> Name and describe the object in <region>.",
        "Tell me briefly about the object at <region> in <image>; describe it.",
    )

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """``target_text`` is one reference (random in training, the first with a fixed phrasing)."""
        texts = list(results.get("gt_texts") or [])
        if texts and results.get("target_text") is None:
            results["target_text"] = rng.choice(texts) if template_index is None else texts[0]
        return self.instruction(rng, template_index), []

    def recognises(self, parts: InstructionParts) -> bool:
        return region_task_of(parts) == self.name
