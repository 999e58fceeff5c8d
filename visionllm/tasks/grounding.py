"""Grounding: the one object a referring expression describes, as ``(c, x1, y1, x2, y2)``."""
import random
from typing import List, Optional, Tuple

import numpy as np

from visionllm.instructions.instruction import Instruction
from visionllm.instructions.output_format import OutputFormat
from visionllm.registry import TASKS

from .spec import InstructionParts, TaskSpec, check_text, quote


@TASKS.register_module(name="grounding")
class GroundingTask(TaskSpec):
    """The instruction quotes the expression; its class token is ``<c0>`` and the best-scoring
    slot is the answer."""

    name = "grounding"
    structured = True
    single_instance = True
    metric = dict(type="RefCocoMetric")
    templates = (
        "Find {expression} in <image> and give {format}.",
        "Locate the object described by {expression} in <image>. Answer as {format}.",
        "<image> Where is {expression}? Reply with {format}.",
        "In <image>, which region matches {expression}? Give its box as {format}.",
        "Please ground the phrase {expression} in <image> and output {format}.",
        "Give the bounding box of {expression} in <image>, written as {format}.",
        "Look at <image> and find {expression}; answer with one box {format}.",
        "<image> Referring expression: {expression}. Output the box {format}.",
        "Point out {expression} in the image <image> with a box {format}.",
        "Which object in <image> is {expression}? Return {format}.",
        "Localise the region of <image> that the text {expression} refers to, as {format}.",
        "Image: <image>. Description: {expression}. Box of the described object as {format}.",
        "Draw a box around {expression} in <image> and report it as {format}.",
        "Show me where {expression} is in <image> using the format {format}.",
        "Detect the single object referred to by {expression} in <image>; format {format}.",
        "Identify {expression} within <image> and give its location as {format}.",
    )

    def fields(self, expression: Optional[str] = None, **_):
        if expression is None:
            raise ValueError("grounding instructions need an expression")
        expression = check_text(expression, "expression")
        output_format = OutputFormat.box()
        return dict(expression=quote(expression), format=output_format.to_text()), [expression], output_format

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """Every target box has label 0 (the expression)."""
        results["gt_labels"] = np.zeros(len(results.get("gt_bboxes", [])), dtype=np.int64)
        return self.instruction(rng, template_index, expression=results["expression"]), [0]

    def recognises(self, parts: InstructionParts) -> bool:
        return (parts.output_format is not None and parts.output_format.kind == "box" and not parts.categories
                and bool(parts.quoted))
