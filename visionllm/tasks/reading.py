"""``read_instruction``: which task a user's free-form instruction asks for, with its category
set or expression and output format, by asking every registered task spec."""
import re
from functools import lru_cache

from visionllm.instructions.category_set import IMAGE_PLACEHOLDER, read_category_set
from visionllm.instructions.instruction import Instruction
from visionllm.instructions.output_format import UnsupportedOutputFormat, find_output_format

_QUESTION_MARKERS = re.compile(r"\b(question|Q:)|\banswer\s*:", re.IGNORECASE)
_DESCRIPTION_WORDS = re.compile(r"\b(caption|describe|description|summari[sz]e)\b", re.IGNORECASE)
_EMPTY_SET = re.compile(r"\{\s*\}")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)+)"')
# A detection / segmentation request without an output format would otherwise be answered as a
# caption, silently.
_STRUCTURED_VERBS = re.compile(r"\b(detect|segment)\w*", re.IGNORECASE)


class InstructionError(ValueError):
    """An instruction no registered task can follow (one-line message)."""


def asks_question(text: str) -> bool:
    """A free-text instruction that asks a question (else it asks for a description)."""
    if _QUESTION_MARKERS.search(text):
        return True
    return "?" in text and not _DESCRIPTION_WORDS.search(text)


def quoted_phrase(text: str) -> str:
    """The first quoted phrase of an instruction (the referring expression of grounding)."""
    match = _QUOTED.search(text)
    return match.group(1) if match else ""


def read_instruction(text: str, strict: bool = True) -> Instruction:
    """The task (the one registered spec that ``recognises`` it), categories and output format
    of a free-form instruction. Raises :class:`InstructionError` for one the model cannot follow.

    ``strict`` (user input) also refuses a request to detect / segment that names no output
    format, which would otherwise be answered in words; the model reads its training and
    evaluation prompts with ``strict=False`` (a question may mention detecting), and a category
    set without an output format as detection whose format the model generates.
    """
    from .spec import InstructionParts, all_tasks

    if not isinstance(text, str) or not text.strip():
        raise InstructionError("the instruction is empty")
    count = text.count(IMAGE_PLACEHOLDER)
    if count != 1:
        raise InstructionError(f"the instruction must contain {IMAGE_PLACEHOLDER} exactly once (found {count}), "
                               f"e.g. '{IMAGE_PLACEHOLDER} Write a short caption for the image.'")
    # A wrapper (the plain-request task) is recognised by its own words: what it wraps may read
    # as any task, or as none.
    for spec in all_tasks():
        if spec.wraps_text and spec.recognises(InstructionParts(text=text, output_format=None, categories=(), quoted="")):
            return Instruction(task=spec.name, text=text)
    try:
        output_format = find_output_format(text)
        categories = tuple(read_category_set(text))
    except UnsupportedOutputFormat as err:
        raise InstructionError(f"the model cannot produce this output format: {err}") from None
    except ValueError as err:
        if output_format is not None:
            raise InstructionError(str(err)) from None
        categories = ()  # braces in a request for text are not a category set
    if strict and output_format is None and _STRUCTURED_VERBS.search(text):
        raise InstructionError("the instruction asks to detect / segment but gives no output format; end it with "
                               "e.g. 'Answer as a list of (c, x1, y1, x2, y2).' or 'as (c, x1, y1, ..., x16, y16)'")
    if output_format is not None and not categories:
        if _EMPTY_SET.search(text):
            raise InstructionError('the category set is empty: name at least one category, e.g. {"cat": <c0>}')
        if not quoted_phrase(text):
            raise InstructionError('a structured output needs a category set {"name": <c0>, ...} '
                                   'or a quoted referring expression')
    parts = InstructionParts(text=text, output_format=output_format, categories=categories,
                             quoted=quoted_phrase(text) if output_format is not None else "")
    matches = [spec for spec in all_tasks() if not spec.fallback and spec.recognises(parts)]
    matches = matches or [spec for spec in all_tasks() if spec.fallback and spec.recognises(parts)]
    if not matches:
        if output_format is not None and not categories:
            raise InstructionError("grounding answers with one box: use the format (c, x1, y1, x2, y2)")
        raise InstructionError(f"no task follows this instruction; the tasks are {[s.name for s in all_tasks()]}")
    if len(matches) > 1:
        raise InstructionError(f"the instruction fits several tasks: {[s.name for s in matches]}")
    spec = matches[0]
    names = list(categories) if categories else ([parts.quoted] if spec.structured else [])
    return Instruction(task=spec.name, text=text, categories=names,
                       output_format=output_format if spec.structured else None)


@lru_cache(maxsize=8192)
def task_of_instruction(text: str):
    """The spec of the task an instruction asks for (as the model reads it: ``strict=False``).
    A follow-up turn of a conversation has no ``<image>`` (the first turn holds it)."""
    from .spec import get_task

    if IMAGE_PLACEHOLDER not in text:
        text = f"{IMAGE_PLACEHOLDER} {text}"
    return get_task(read_instruction(text, strict=False).task)
