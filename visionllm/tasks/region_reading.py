"""How an instruction about ``<region>`` placeholders is told apart: which region task asks for it."""
import re

from visionllm.instructions.regions import REGION_PLACEHOLDER

from .reading import asks_question
from .spec import InstructionParts

# Words of a request to pick one name out of a given list (region classification).
_CHOICE_WORDS = re.compile(r"\b(classify|classif\w*|categor\w*|which of|one of|options?|choices?|candidates?|"
                           r"labels?)\b", re.IGNORECASE)


def points_at_regions(parts: InstructionParts) -> bool:
    """A free-text instruction (no output format) with at least one ``<region>``."""
    return parts.output_format is None and REGION_PLACEHOLDER in parts.text


def offers_choices(text: str) -> bool:
    """The instruction asks to pick one of the names it lists."""
    return bool(_CHOICE_WORDS.search(text))


def region_task_of(parts: InstructionParts) -> str:
    """``"region_classification"``, ``"region_vqa"`` or ``"region_caption"`` for an instruction
    with regions, "" for one without: choices first, then a question, else a description."""
    if not points_at_regions(parts):
        return ""
    if offers_choices(parts.text):
        return "region_classification"
    return "region_vqa" if asks_question(parts.text) else "region_caption"
