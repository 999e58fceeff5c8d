"""``TaskSpec``: everything the toolkit needs to know about one task, in one place."""
import json
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from visionllm.instructions.category_set import IMAGE_PLACEHOLDER
from visionllm.instructions.instruction import Instruction
from visionllm.instructions.output_format import OutputFormat
from visionllm.registry import TASKS


@dataclass(frozen=True)
class InstructionParts:
    """What a user's instruction states, as read by ``read_instruction``: the output format
    (None: free text), the category set's names and the first quoted phrase (or "")."""

    text: str
    output_format: Optional[OutputFormat]
    categories: Tuple[str, ...]
    quoted: str


class TaskSpec:
    """One task. A subclass sets the class attributes and, where the defaults do not fit,
    overrides ``fields`` (the template's placeholders), ``build`` (instruction and targets of an
    annotated sample) and ``recognises`` (whether a user's instruction asks for it).

    Attributes:
        name: the task's name in data samples (``task`` metainfo), datasets and configs.
        structured: answered with boxes / polygons decoded in parallel slots; else with text.
        single_instance: the answer is one object: the best slot is kept and drawn.
        templates: the phrasings; index 0 is the evaluation phrasing. Placeholders are the keys
            ``fields`` returns; every template holds ``<image>`` exactly once.
        metric: the default metric config (``MultiTaskMetric`` takes the ``type`` from here when
            a task's metric config names none).
        fallback: recognised only when no other task recognises an instruction (a catch-all,
            such as captioning for any request in words that is not a question).
        wraps_text: the instruction wraps another text (a user's plain request) that other
            tasks would read as their own: recognised from the raw text before anything in it
            is parsed, ahead of every other task.
    """

    name: str = ""
    structured: bool = False
    single_instance: bool = False
    templates: Tuple[str, ...] = ()
    metric: Dict = {}
    fallback: bool = False
    wraps_text: bool = False

    # ------------------------------------------------------------------ instructions
    def fields(self, **values) -> Tuple[dict, List[str], Optional[OutputFormat]]:
        """``(template fields, categories, output format)`` of an instruction from the task's
        values (e.g. ``categories=``, ``expression=``, ``question=``, ``num_points=``)."""
        return {}, [], None

    def instruction(self, rng: random.Random, template_index: Optional[int] = None, **values) -> Instruction:
        """One phrasing filled with ``values``; ``rng`` picks it unless ``template_index`` is given."""
        if template_index is None:
            template_index = rng.randrange(len(self.templates))
        elif not 0 <= template_index < len(self.templates):
            raise IndexError(f"template_index {template_index} out of range for {self.name} "
                             f"({len(self.templates)} phrasings)")
        fill, categories, output_format = self.fields(**values)
        return Instruction(task=self.name, text=self.templates[template_index].format(**fill),
                           categories=categories, output_format=output_format)

    def phrasings(self) -> Tuple[str, ...]:
        """Every phrasing the task is trained with (``templates`` and any others its ``build`` uses)."""
        return tuple(self.templates)

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **options) -> Tuple[Instruction, List[int]]:
        """The instruction of an annotated sample (``results`` of the data pipeline) and its
        category ids; edits the sample's targets in place where the instruction selects them.
        ``options`` are the ``BuildInstruction`` transform's settings."""
        return self.instruction(rng, template_index), []

    def recognises(self, parts: InstructionParts) -> bool:
        """Whether a user's instruction with these parts asks for this task."""
        return False


def check_text(value, what: str) -> str:
    """A non-empty free-text value to put into an instruction, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if IMAGE_PLACEHOLDER in value:
        raise ValueError(f"{what} may not contain {IMAGE_PLACEHOLDER}: {value!r}")
    return value.strip()


def quote(text: str) -> str:
    """A phrase as the instructions quote it (JSON string: quotes inside stay unambiguous)."""
    return json.dumps(text, ensure_ascii=False)


_INSTANCES: Dict[str, TaskSpec] = {}


def get_task(name: str) -> TaskSpec:
    """The registered spec of task ``name``."""
    import visionllm.tasks  # noqa: F401  (registers the built-in tasks)

    spec_class = TASKS.get(name) if isinstance(name, str) else None
    if spec_class is None:
        raise ValueError(f"unknown task {name!r}; expected one of {task_names()}")
    if name not in _INSTANCES:
        _INSTANCES[name] = spec_class()
    return _INSTANCES[name]


def task_names() -> Tuple[str, ...]:
    """Names of the registered tasks, in registration order."""
    import visionllm.tasks  # noqa: F401

    return tuple(TASKS.module_dict)


def all_tasks() -> List[TaskSpec]:
    return [get_task(name) for name in task_names()]
