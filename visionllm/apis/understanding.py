"""What a user's instruction asks for: read from the explicit template syntax, or else decided
by the model, which rewrites a plain request as a canonical form (``visionllm.tasks.request``).

1. Explicit: the instruction names a structured output format that ``read_instruction``
   accepts, or matches one of a task's phrasings: it is followed as written. Template syntax
   that ``read_instruction`` refuses (a bad category set or output format) raises its error.
2. Otherwise the model writes the request's canonical form (the ``request`` task on the first
   image), which is expanded into the evaluation phrasing (template 0) of the task it names and
   followed as if the user had written that; a caption asked for in a style keeps its style
   (``CaptionTask.requested_style`` of the user's words picks that style's first phrasing).
3. A canonical form that cannot be read (e.g. a model never trained on requests) falls back to
   the rule-based reading of the instruction (``read_instruction``), as before plain requests;
   the result says so (``understanding="fallback"``).
4. A canonical form that cannot be what a request (no question) asks for is followed as the
   caption its words ask for (``understanding="fallback"``): ``unsupported`` where the words ask
   for a caption style, grounding the whole image, or another task's form where the words ask
   for a caption style that is more than a number (a question's answer always, any other task's
   output when the words also ask for a description).
5. Otherwise ``unsupported``: no task serves the request; an :class:`InputError` lists the tasks.
"""
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from visionllm.apis.inputs import ImageInput, InputError, load_image, original_size
from visionllm.instructions import IMAGE_PLACEHOLDER, REGION_PLACEHOLDER
from visionllm.instructions.output_format import UnsupportedOutputFormat, find_output_format
from visionllm.tasks import (CanonicalFormError, InstructionError, all_tasks, get_task, read_canonical,
                             read_instruction, user_task_names, wrap_request)
from visionllm.tasks.reading import asks_question

EXPLICIT, MODEL, FALLBACK = "explicit", "model", "fallback"


@lru_cache(maxsize=1)
def _template_patterns() -> tuple:
    """Every phrasing of the user-facing tasks as a regex, placeholders matching any text."""
    patterns = []
    for spec in all_tasks():
        if spec.wraps_text:
            continue
        for template in spec.phrasings():
            parts = re.split(r"\{\w+\}", template)
            patterns.append(re.compile(r"\s*" + "(.+)".join(re.escape(p) for p in parts) + r"\s*", re.DOTALL))
    return tuple(patterns)


# Template syntax with a mistake in it: its own error is clearer than any guess.
_SYNTAX = re.compile(r"<c\d+>|\{\s*\}")


def is_explicit(instruction: str) -> bool:
    """An instruction in the template syntax: a structured output ``read_instruction`` accepts,
    a phrasing of a task, the request task's own wrapper, or template syntax that
    ``read_instruction`` refuses (a category set, an empty one, an output format the model
    cannot produce), whose error is then reported as it is. An instruction with ``<region>``
    placeholders is followed as written (a canonical form would lose its regions)."""
    if REGION_PLACEHOLDER in instruction:
        return True
    try:
        parsed = read_instruction(instruction)
    except InstructionError:
        try:
            find_output_format(instruction)
        except UnsupportedOutputFormat:
            return True
        return bool(_SYNTAX.search(instruction))
    if parsed.output_format is not None or parsed.task == "request":
        return True
    return any(pattern.fullmatch(instruction) for pattern in _template_patterns())


@dataclass
class Understanding:
    """What will be run: ``description`` (``describe_instruction`` of the instruction
    followed), ``how`` (``"explicit"``, ``"model"`` or ``"fallback"``), ``request`` (the user's
    words) and ``canonical`` (the model's canonical form, when it wrote one)."""

    description: dict
    how: str
    request: str
    canonical: Optional[str] = None

    def report(self, result) -> None:
        """Note on a result what was understood (``result.task`` / ``result.instruction`` are the
        description's)."""
        result.understanding = self.how
        result.request = self.request
        result.canonical = self.canonical


def generate_canonical(inferencer, image: ImageInput, instruction: str) -> str:
    """The model's canonical form of a plain request about ``image``."""
    from visionllm.apis.inferencer import describe_instruction

    description = describe_instruction(wrap_request(instruction))
    inputs = inferencer._model_inputs([(load_image(image), original_size(image))], description)
    sample = inferencer.model(**inputs, mode="predict")[0]
    return (sample.get("pred_text") or "").strip()


def check_instruction(instruction: str, history: Optional[Sequence[dict]] = None) -> bool:
    """What can be refused before the model reads an instruction (one-line :class:`InputError`):
    template syntax and conversation follow-ups in full (``describe_instruction``), a plain
    request only for being empty or showing ``<image>`` twice. Returns whether the instruction is
    followed as written (True) or is a plain request for the model to rewrite."""
    from visionllm.apis.inferencer import describe_instruction

    if history or not isinstance(instruction, str) or is_explicit(instruction):
        describe_instruction(instruction, history)
        return True
    if not instruction.strip() or instruction.count(IMAGE_PLACEHOLDER) > 1:
        describe_instruction(instruction)  # raises the one-line InputError (empty, <image> twice)
    return False


def understand_instruction(inferencer, image: ImageInput, instruction: str,
                           history: Optional[Sequence[dict]] = None) -> Understanding:
    """Decide what ``instruction`` asks for (module docstring); ``image`` is the one the model
    reads a plain request with. Follow-up turns of a conversation are read as written."""
    from visionllm.apis.inferencer import describe_instruction

    if check_instruction(instruction, history):
        return Understanding(describe_instruction(instruction, history), EXPLICIT, instruction)
    canonical = generate_canonical(inferencer, image, instruction)
    polygon_points = inferencer.cfg.get("eval_polygon_points")
    try:
        expanded = read_canonical(canonical, num_points=polygon_points if isinstance(polygon_points, int) else None)
    except CanonicalFormError:
        # Rule-based reading (raises a one-line InputError for an instruction it cannot follow).
        return Understanding(describe_instruction(instruction), FALLBACK, instruction, canonical)
    caption = _caption_instead(expanded, canonical, instruction)
    if caption is not None:
        return Understanding(describe_instruction(caption), FALLBACK, instruction, canonical)
    if expanded is None:
        raise InputError(f"no task serves this request ({instruction!r}); the model can do: "
                         f"{', '.join(user_task_names())}")
    return Understanding(describe_instruction(_styled(expanded, instruction)), MODEL, instruction, canonical)


# A grounding target that is the whole image names no object in it.
_WHOLE_IMAGE = re.compile(r"(?:(?:the|this|that|my|your) )?(?:image|picture|photo|photograph|scene|everything|it)")


# Words that ask for a description of the image, whatever else the request names.
_DESCRIBE = re.compile(r"\b(?:describe|description|caption|summari[sz]e|tell me about)\b")


def _caption_instead(expanded, canonical: str, request: str) -> Optional[str]:
    """The caption phrasing to follow instead of a canonical form that cannot be what a request
    (no question: "how many calories are in this?" is not a count caption) asks for, or None:
    ``unsupported`` where the words ask for a caption style (they name a task the model has),
    grounding the whole image ("grounding: the image"), or a form of another task where the
    words ask for a caption style other than a bare count (the kinds without colours, the count
    then the list, relative positions): a question's answer, which no short answer gives ("Count
    the stars." stays a question of how many), and any task's output when the words also ask
    for a description ("Describe the image without the colours." read as a grounding)."""
    if asks_question(request):
        return None
    if expanded is None:
        return _style_phrasing(request)
    caption = get_task("caption")
    if expanded.task == "grounding" and _WHOLE_IMAGE.fullmatch(canonical.partition(":")[2].strip().lower()):
        return _style_phrasing(request) or caption.templates[0]
    if expanded.task != "caption" and caption.requested_style(request) not in (None, "count") and (
            expanded.task == "vqa" or _DESCRIBE.search(request.lower())):
        return _style_phrasing(request)
    return None


def _styled(expanded, request: str) -> str:
    """The text of ``expanded`` (a canonical form's instruction), or for a caption the phrasing
    of the style ``request`` asks for in its own words."""
    if expanded.task != "caption":
        return expanded.text
    return _style_phrasing(request) or expanded.text


def _style_phrasing(request: str) -> Optional[str]:
    """The first phrasing of the caption style a request asks for in its own words ("without the
    colours", "just how many"; ``CaptionTask.requested_style``), or None."""
    caption = get_task("caption")
    style = caption.requested_style(request)
    return None if style is None else caption.style_templates[style][0]
