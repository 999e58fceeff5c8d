"""Plain requests: the LLM rewrites a user's request in its own words as a canonical form.

The ``request`` task's instruction wraps the user's request in one fixed prompt
(``REQUEST_WRAPPER``); its target text is the request's *canonical form*, a short line the LLM
can write with ordinary tokens:

    detection: star; hexagon           every star and hexagon, as boxes
    segmentation: star                 every star, as polygons
    grounding: the red square          the one object the expression describes
    vqa: how many triangles are there? a question, answered in words
    caption                            a description
    unsupported                        a request no task serves

``read_canonical`` expands it into the evaluation phrasing (template 0) of the task it names,
which the model then follows as if the user had written it. Why not have the LLM write template
0 itself: class tokens ``<c0>`` are new tokens that text generation never emits, and template 0
repeats some 20 words of fixed boilerplate the expansion adds for free.
"""
import random
import re
from typing import List, Optional, Sequence, Tuple

from visionllm.instructions.category_set import IMAGE_PLACEHOLDER
from visionllm.instructions.instruction import Instruction
from visionllm.registry import TASKS

from .spec import InstructionParts, TaskSpec, check_text, get_task, task_names

REQUEST_TASK = "request"
REQUEST_WRAPPER = "<image> Rewrite this request as a task: {request}"
UNSUPPORTED = "unsupported"
CATEGORY_SEPARATOR = "; "
_PREFIX = REQUEST_WRAPPER.split("{request}")[0]


class CanonicalFormError(ValueError):
    """A canonical form that names no registered task or lacks what its task needs."""


def request_words(text: str) -> str:
    """A user's request without ``<image>``: dropped at either end, "the image" inside
    ("How many triangles are in <image>?" → "How many triangles are in the image?")."""
    text = " ".join(text.split())
    if text.startswith(IMAGE_PLACEHOLDER):
        text = text[len(IMAGE_PLACEHOLDER):]
    elif text.endswith(IMAGE_PLACEHOLDER):
        text = text[:-len(IMAGE_PLACEHOLDER)]
    return " ".join(text.replace(IMAGE_PLACEHOLDER, "the image").split())


def wrap_request(text: str) -> str:
    """The ``request`` task's instruction for a user's request (with or without ``<image>``)."""
    return REQUEST_WRAPPER.format(request=check_text(request_words(text), "request"))


def request_in(instruction: str) -> Optional[str]:
    """The user's request inside a ``request`` instruction (``REQUEST_WRAPPER``), else None."""
    text = " ".join(str(instruction).split())
    return text[len(_PREFIX):].strip() if text.startswith(_PREFIX.strip()) else None


def word_forms(word: str) -> set:
    """``word`` with its regular English singular and plural forms ("stars" -> star, "box" ->
    boxes): a canonical form may name in the singular what a request says in the plural."""
    forms = {word, word + "s", word + "es"}
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    return forms


def user_task_names() -> List[str]:
    """The tasks a request can ask for (every registered task but the request task itself)."""
    return [name for name in task_names() if not get_task(name).wraps_text]


def canonical_vocabulary(request: str, extra_words: Sequence[str] = ()) -> List[str]:
    """The words a canonical form of ``request`` may be written with: the request's own words
    (as written and lower-cased, each in its singular and plural forms), the task names,
    ``UNSUPPORTED`` and ``extra_words`` (those a canonical form adds, such as the fixed words of
    its question forms)."""
    words = set(user_task_names()) | {UNSUPPORTED} | {w for extra in extra_words for w in extra.split()}
    for word in re.findall(r"[^\W\d_]+|\d+", request_words(request)):
        words |= word_forms(word) | word_forms(word.lower())
    return sorted(words)


def category_tasks() -> List[str]:
    """The tasks whose canonical form names categories ("detection: star; hexagon")."""
    return [name for name in user_task_names() if _argument_kind(name) == "categories"]


def _argument_kind(task: str) -> Optional[str]:
    """What a task's canonical form names after the colon: categories (structured, many
    objects), an expression (structured, one object), a question (text with a question field)
    or nothing."""
    spec = get_task(task)
    if spec.structured:
        return "expression" if spec.single_instance else "categories"
    return "question" if "{question}" in spec.templates[0] else None


def canonical_text(task: str, *, categories: Optional[Sequence[str]] = None, expression: Optional[str] = None,
                   question: Optional[str] = None) -> str:
    """The canonical form of a request for ``task`` (``UNSUPPORTED`` for ``task=None``)."""
    if task is None:
        return UNSUPPORTED
    kind = _argument_kind(task)
    if kind is None:
        return task
    if kind == "categories":
        names = [check_text(name, "category") for name in categories or ()]
        if not names or any(CATEGORY_SEPARATOR.strip() in name for name in names):
            raise ValueError(f"{task} needs category names without {CATEGORY_SEPARATOR.strip()!r}: {categories!r}")
        return f"{task}: {CATEGORY_SEPARATOR.join(names)}"
    value = expression if kind == "expression" else question
    return f"{task}: {check_text(value, kind)}"


def read_canonical(text: str, num_points: Optional[int] = None) -> Optional[Instruction]:
    """The evaluation phrasing (template 0) a canonical form stands for; ``None`` for
    ``UNSUPPORTED``. ``num_points``: polygon size of segmentation (the task's default when
    None). Raises :class:`CanonicalFormError` for anything else."""
    text = " ".join(str(text).split())
    if text == UNSUPPORTED:
        return None
    task, colon, argument = text.partition(":")
    task, argument = task.strip(), argument.strip()
    if task not in task_names():
        raise CanonicalFormError(f"the canonical form {text!r} names no task")
    spec = get_task(task)
    if spec.wraps_text:
        raise CanonicalFormError(f"the canonical form {text!r} names the request task itself")
    kind = _argument_kind(task)
    if (kind is None) != (not colon and not argument):
        raise CanonicalFormError(f"the canonical form {text!r} does not fit task {task}")
    values = {}
    if kind == "categories":
        names = [name.strip() for name in argument.split(CATEGORY_SEPARATOR.strip())]
        if not all(names) or len(set(names)) != len(names):
            raise CanonicalFormError(f"the canonical form {text!r} has an empty or repeated category")
        values = dict(categories=names, num_points=num_points)
    elif kind is not None:
        values = {kind: argument}
    try:
        return spec.instruction(random.Random(0), 0, **values)
    except ValueError as err:
        raise CanonicalFormError(f"the canonical form {text!r} cannot be expanded: {err}") from None


@TASKS.register_module(name=REQUEST_TASK)
class RequestTask(TaskSpec):
    """Text: the instruction is ``REQUEST_WRAPPER`` around a user's request (``request``
    values and data-info key), the target its canonical form (``target_text``, written by the
    data, e.g. ``PlainRequestDataset``)."""

    name = REQUEST_TASK
    wraps_text = True
    metric = dict(type="CanonicalFormMetric")
    templates = (REQUEST_WRAPPER,)

    def fields(self, request: Optional[str] = None, **_) -> Tuple[dict, List[str], None]:
        if request is None:
            raise ValueError("request instructions need the user's request")
        return dict(request=check_text(request_words(request), "request")), [], None

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """The sample's ``request`` wrapped; ``target_text`` (the canonical form) is the data's."""
        return self.instruction(rng, 0, request=results["request"]), []

    def recognises(self, parts: InstructionParts) -> bool:
        return parts.text.startswith(_PREFIX)
