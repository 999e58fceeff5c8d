"""Visual question answering: a short answer to a question about the image."""
import random
from typing import List, Optional, Tuple

from visionllm.instructions.instruction import Instruction
from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.registry import TASKS

from .reading import asks_question
from .spec import InstructionParts, TaskSpec, check_text


@TASKS.register_module(name="vqa")
class VqaTask(TaskSpec):
    """Free text: the question goes into the instruction; ``target_text`` is the dataset's answer."""

    name = "vqa"
    metric = dict(type="VQAAccuracy")
    templates = (
        "<image> Answer the question: {question}",
        "<image> {question} Answer with a word or a short phrase.",
        "Look at <image> and answer: {question}",
        "Question about <image>: {question} Answer briefly.",
        "<image> Question: {question} Answer:",
        "Based on <image>, {question}",
        "<image> Please answer the following question about the image. {question}",
        "Answer the question using the image <image>: {question}",
        "Image: <image>. Question: {question} Give a short answer.",
        "<image> Using the picture, reply to this question: {question}",
        "Consider <image>. {question} Reply in a few words.",
        "<image> I have a question about this image: {question}",
        "Given <image>, answer the question {question}",
        "<image> Respond to the question with a short answer. {question}",
        "From what you see in <image>, answer: {question}",
        "<image> Q: {question} A:",
    )

    def fields(self, question: Optional[str] = None, **_):
        if question is None:
            raise ValueError(f"{self.name} instructions need a question")
        return dict(question=check_text(question, "question")), [], None

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """A later turn of a conversation (``history`` set) is asked as written: ``<image>``
        stands in the history's first turn."""
        if results.get("history"):
            return Instruction(task=self.name, text=check_text(results["question"], "question"), follow_up=True), []
        return self.instruction(rng, template_index, question=results["question"]), []

    def recognises(self, parts: InstructionParts) -> bool:
        return (parts.output_format is None and not parts.categories and REGION_PLACEHOLDER not in parts.text
                and asks_question(parts.text))
