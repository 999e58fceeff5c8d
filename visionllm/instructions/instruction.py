"""The ``Instruction``: what one prompt asks for, in text and in structured form."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .category_set import IMAGE_PLACEHOLDER
from .output_format import OutputFormat


@dataclass
class Instruction:
    """One instruction.

    Attributes:
        task: a registered task's name (``visionllm.tasks.task_names()``).
        text: the prompt, with exactly one ``<image>`` where the image tokens go (none in a
            ``follow_up``: a later turn of a conversation whose first turn holds the image).
        categories: class token ``<ci>`` means ``categories[i]``; grounding ``[expression]``;
            caption / vqa ``[]``.
        output_format: the structured output asked for, ``None`` for free text.
    """

    task: str
    text: str
    categories: List[str] = field(default_factory=list)
    output_format: Optional[OutputFormat] = None
    follow_up: bool = False

    def __post_init__(self):
        from visionllm.tasks import get_task  # the tasks build instructions: imported when used

        get_task(self.task)  # raises for an unknown task
        count = self.text.count(IMAGE_PLACEHOLDER)
        if count != (0 if self.follow_up else 1):
            expected = "no" if self.follow_up else "exactly one"
            raise ValueError(f"{'a follow-up' if self.follow_up else 'an'} instruction holds {expected} "
                             f"{IMAGE_PLACEHOLDER}, found {count}")

    def metainfo(self) -> Dict[str, Any]:
        """The data-sample metainfo keys this instruction fills (see docs/interfaces.md)."""
        return dict(task=self.task, instruction=self.text, categories=list(self.categories),
                    output_format=self.output_format.fields if self.output_format else None)
