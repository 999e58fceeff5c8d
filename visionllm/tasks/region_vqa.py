"""Region question answering: a short answer to a question about one or more ``<region>``s
("What colour is <region>?", "Is <region> left of <region>?")."""
import random
from typing import List, Optional, Tuple

from visionllm.instructions.instruction import Instruction
from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.registry import TASKS

from .region_reading import region_task_of
from .spec import InstructionParts, TaskSpec, check_text


@TASKS.register_module(name="region_vqa")
class RegionVqaTask(TaskSpec):
    """Free text: the question (holding the ``<region>`` placeholders) goes into the instruction;
    ``target_text`` is the answer."""

    name = "region_vqa"
    metric = dict(type="RegionVQAAccuracy")
    templates = (
        "<image> Answer the question: {question}",
        "<image> {question} Answer with a word.",
        "Look at <image> and answer: {question}",
        "Question about <image>: {question} Answer briefly.",
        "<image> Question: {question} Answer:",
        "Based on <image>, {question}",
        "<image> Please answer this question about the marked regions. {question}",
        "Answer using the image <image>: {question}",
        "Image: <image>. Question: {question} Give a short answer.",
        "<image> Using the picture, reply to this question: {question}",
        "Consider <image>. {question} Reply in a word.",
        "<image> I have a question about the regions: {question}",
        "Given <image>, answer the question {question}",
        "<image> Respond to the question with a short answer. {question}",
        "From what you see in <image>, answer: {question}",
        "<image> Q: {question} A:",
    )

    def fields(self, question: Optional[str] = None, **_):
        if question is None:
            raise ValueError("region_vqa instructions need a question")
        question = check_text(question, "question")
        if REGION_PLACEHOLDER not in question:
            raise ValueError(f"a region question must contain {REGION_PLACEHOLDER}: {question!r}")
        return dict(question=question), [], None

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        return self.instruction(rng, template_index, question=results["question"]), []

    def recognises(self, parts: InstructionParts) -> bool:
        return region_task_of(parts) == self.name
