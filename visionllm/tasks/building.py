"""``build_instruction``: one phrasing of a task filled in (the task's spec does the work)."""
import random
from typing import Optional, Sequence, Tuple

from visionllm.instructions.instruction import Instruction

from .spec import get_task


def build_instruction(task: str, rng: random.Random, *, categories: Optional[Sequence[str]] = None,
                      expression: Optional[str] = None, question: Optional[str] = None,
                      num_points: Optional[int] = None, template_index: Optional[int] = None) -> Instruction:
    """Fill one phrasing of ``task``.

    Args:
        task: a registered task name (``task_names()``).
        rng: picks the phrasing (unused when ``template_index`` is given).
        categories: the category set, in class-token order (detection / segmentation).
        expression: the referring expression (grounding); the instruction's categories are
            ``[expression]`` so its class token is ``<c0>``.
        question: the question (VQA).
        num_points: polygon size K for segmentation (default 16).
        template_index: a fixed phrasing; 0 is the evaluation phrasing.
    """
    values = dict(categories=categories, expression=expression, question=question, num_points=num_points)
    return get_task(task).instruction(rng, template_index, **values)


def templates_of(task: str) -> Tuple[str, ...]:
    """The phrasings of ``task`` (index 0: the evaluation phrasing)."""
    return get_task(task).templates
