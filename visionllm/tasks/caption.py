"""Captioning: a short description of the image."""
import random
from typing import List, Optional, Tuple

from visionllm.instructions.instruction import Instruction
from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.registry import TASKS

from .reading import asks_question
from .spec import InstructionParts, TaskSpec


@TASKS.register_module(name="caption")
class CaptionTask(TaskSpec):
    """Free text: any request without an output format that is not a question and that no
    other task recognises."""

    name = "caption"
    fallback = True
    metric = dict(type="CaptionMetric")
    templates = (
        "<image> Write a short caption for the image.",
        "<image> Describe the image in one sentence.",
        "Give a brief description of <image>.",
        "<image> What does this image show? Answer with a short caption.",
        "Write a one-sentence caption for <image>.",
        "<image> Summarise the content of the picture briefly.",
        "Caption this image: <image>",
        "Look at <image> and describe what you see in a few words.",
        "<image> Provide a concise caption.",
        "Briefly describe the scene in <image>.",
        "<image> Generate a short description of this image.",
        "What is happening in <image>? Describe it in one sentence.",
        "Please write a caption that describes <image>.",
        "<image> Tell me briefly what is in the image.",
        "Produce a short, accurate caption for the picture <image>.",
        "<image> Describe the main objects in the image in one short sentence.",
    )

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """``target_text`` is one reference caption (random in training, the first with a fixed
        phrasing); ``gt_texts`` keeps them all."""
        texts = list(results.get("gt_texts") or [])
        if texts and results.get("target_text") is None:
            results["target_text"] = rng.choice(texts) if template_index is None else texts[0]
        return self.instruction(rng, template_index), []

    def recognises(self, parts: InstructionParts) -> bool:
        return (parts.output_format is None and not parts.categories and REGION_PLACEHOLDER not in parts.text
                and not asks_question(parts.text))
