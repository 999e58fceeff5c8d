"""Region question answering: a short answer to a question about one or more ``<region>``s
("What colour is <region>?", "Is <region> left of <region>?")."""
from typing import Optional

from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.registry import TASKS

from .region_reading import region_task_of
from .spec import InstructionParts
from .vqa import VqaTask


@TASKS.register_module(name="region_vqa")
class RegionVqaTask(VqaTask):
    """As VQA, with a question that holds ``<region>`` placeholders; its own phrasings, metric
    and recognition."""

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

    def fields(self, question: Optional[str] = None, **values):
        fill, categories, output_format = super().fields(question=question, **values)
        if REGION_PLACEHOLDER not in fill["question"]:
            raise ValueError(f"a region question must contain {REGION_PLACEHOLDER}: {question!r}")
        return fill, categories, output_format

    def recognises(self, parts: InstructionParts) -> bool:
        return region_task_of(parts) == self.name
