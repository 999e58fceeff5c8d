"""A conversation about one image: ``Conversation(inferencer, image).ask(...)`` turn after turn.

The turns stay in the prompt in the LLaVA-Instruct layout (``PromptBuilder.render``): earlier
(user, assistant) turns in order, then the new question; ``<image>`` stands once, in the first
turn. Any turn may be any task (detect, segment, ground, caption, answer).
"""
from dataclasses import dataclass
from typing import List

import numpy as np

from visionllm.apis.inferencer import VisionLLMInferencer, VisionLLMResult
from visionllm.apis.inputs import ImageInput, InputError, load_image
from visionllm.instructions import IMAGE_PLACEHOLDER

# The threshold of the command line and the pictures: what the user is shown is what was said.
DEFAULT_SCORE_THRESHOLD = 0.3


def answer_text(result: VisionLLMResult, score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> str:
    """The answer of a turn as the assistant's words in the prompts of later turns.

    Captions and answers are their text. Structured results are written readably, one object
    per item: ``"circle [0.12, 0.40, 0.31, 0.55]; star [0.60, 0.10, 0.82, 0.35]"`` (name, then
    x1, y1, x2, y2 divided by the image width / height, two decimals; a polygon by its extent),
    ``"none"`` when nothing scores ``score_threshold`` or more (grounding keeps its one box).

    Why words and numbers rather than the location tokens: a location token is an offset from
    the reference point of the image token whose slot produced it, a reference the text of a
    later prompt does not carry, and class tokens ``<ci>`` mean the i-th name of that turn's own
    category set only. Names and image-relative numbers (the layout of Shikra) mean the same
    in every turn, and a pretrained LLM reads them: enough to count them, pick one by colour or
    position, or refer to "the second one".
    """
    if result.task not in ("detection", "segmentation", "grounding"):
        return (result.text or "").strip()
    height, width = result.image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    keep = np.ones(len(result.scores), bool) if result.task == "grounding" else result.scores >= score_threshold
    items = []
    for box, name in zip(result.boxes[keep], np.asarray(result.names, dtype=object)[keep]):
        x1, y1, x2, y2 = np.clip(box / scale, 0.0, 1.0)
        items.append(f"{name} [{x1:.2f}, {y1:.2f}, {x2:.2f}, {y2:.2f}]")
    return "; ".join(items) or "none"


@dataclass
class ConversationTurn:
    """One turn: what the user asked, the model's result, and the answer as later prompts read it."""

    instruction: str
    result: VisionLLMResult
    answer: str

    def as_history(self) -> dict:
        return dict(user=self.instruction, assistant=self.answer)


class Conversation:
    """Questions about one image, each answered with the earlier turns in the LLM's prompt.

    The first question shows the image (``"<image> Detect ..."``); later ones refer back
    without it (``"and how many of them are red?"``). Each :meth:`ask` returns that turn's
    :class:`VisionLLMResult`.

    Args:
        inferencer: a :class:`VisionLLMInferencer`.
        image: the image (path, array or PIL image; see ``load_image``), read now so that a bad
            one fails here.
        score_threshold: structured answers keep the objects scoring at least this much in the
            history (``answer_text``).
    """

    def __init__(self, inferencer: VisionLLMInferencer, image: ImageInput,
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD):
        load_image(image)
        self.inferencer = inferencer
        self.image = image
        self.score_threshold = score_threshold
        self._turns: List[ConversationTurn] = []

    @property
    def turns(self) -> List[ConversationTurn]:
        """The turns so far, oldest first (a copy)."""
        return list(self._turns)

    @property
    def history(self) -> List[dict]:
        """The turns as the prompt reads them: ``[{"user", "assistant"}, ...]``."""
        return [turn.as_history() for turn in self._turns]

    def ask(self, instruction: str) -> VisionLLMResult:
        """Answer ``instruction`` after the earlier turns and keep it as the newest turn."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError("the instruction is empty")
        count = instruction.count(IMAGE_PLACEHOLDER)
        if not self._turns and count != 1:
            raise InputError(f"the first turn of a conversation shows the image: it must contain "
                             f"{IMAGE_PLACEHOLDER} exactly once (found {count})")
        if self._turns and count:
            raise InputError(f"the image is already in the conversation (first turn): ask a follow-up "
                             f"without {IMAGE_PLACEHOLDER}, or reset() to start over")
        result = self.inferencer(self.image, instruction, history=self.history or None,
                                 score_threshold=self.score_threshold)
        self._turns.append(ConversationTurn(instruction, result, answer_text(result, self.score_threshold)))
        return result

    def reset(self) -> None:
        """Forget every turn: the next question starts a new conversation (with ``<image>``)."""
        self._turns.clear()
