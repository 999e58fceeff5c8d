"""Tasks as registered specs (``visionllm.registry.TASKS``).

Each task is one module with a :class:`TaskSpec`: whether it is answered with boxes / polygons
or text, its phrasings, how its instruction and targets are built from a sample's annotations,
how a user's instruction is recognised as it, its default metric and whether one or all of its
answers are kept and drawn. The model, the data pipeline, the inference API and the metrics ask
the spec; adding a task is a new module registered here (docs/customising.md).
"""
from .spec import InstructionParts, TaskSpec, all_tasks, get_task, task_names
from . import detection, segmentation, grounding, caption, vqa, request  # noqa: E402,F401  (registration)
from . import region_caption, region_vqa, region_classification  # noqa: E402,F401  (registration)
from .building import build_instruction, templates_of  # noqa: E402
from .reading import InstructionError, read_instruction, task_of_instruction  # noqa: E402
from .request import (UNSUPPORTED, CanonicalFormError, canonical_text, canonical_vocabulary,  # noqa: E402
                      category_tasks, read_canonical, request_in, user_task_names, wrap_request)
from .segmentation import DEFAULT_NUM_POINTS, SEGMENTATION_NUM_POINTS  # noqa: E402

__all__ = ["TaskSpec", "InstructionParts", "get_task", "task_names", "all_tasks", "build_instruction",
           "templates_of", "read_instruction", "task_of_instruction", "InstructionError", "DEFAULT_NUM_POINTS", "SEGMENTATION_NUM_POINTS",
           "UNSUPPORTED", "CanonicalFormError", "canonical_text", "canonical_vocabulary", "category_tasks", "read_canonical",
           "request_in", "user_task_names", "wrap_request"]
