"""Instruction and target construction of a sample, by its task's spec (``visionllm.tasks``)."""
import random
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from visionllm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class BuildInstruction(BaseTransform):
    """Writes ``instruction``, ``categories``, ``category_ids``, ``output_format`` and the
    targets of the sample's ``task``, as that task's spec builds them (``TaskSpec.build``,
    ``visionllm.tasks``): e.g. detection draws a category set with negatives and relabels the
    boxes, grounding quotes the expression, caption picks a reference caption, VQA puts the
    question in. Caption / VQA boxes (readers with ``boxes_file``) keep label -1: they name no
    category and only supervise where the image tokens sit.

    Args:
        max_categories / negative_ratio / sample_categories: the category-set sampling of
            detection and segmentation (``sample_category_set``); ``sample_categories=False``
            (evaluation) names every dataset class in dataset order.
        template_index: fixed phrasing (0 = the evaluation phrasing); None samples one.
        seed: fixed seed of the per-sample generator (tests); None draws it from numpy's global
            generator, which mmengine seeds per worker.
    """

    def __init__(self, max_categories: int = 512, negative_ratio: float = 1.0, sample_categories: bool = True,
                 template_index: Optional[int] = None, seed: Optional[int] = None):
        self.max_categories = max_categories
        self.negative_ratio = negative_ratio
        self.sample_categories = sample_categories
        self.template_index = template_index
        self.seed = seed

    def _rng(self) -> random.Random:
        return random.Random(self.seed if self.seed is not None else int(np.random.randint(2 ** 31)))

    def transform(self, results: dict) -> dict:
        from visionllm.tasks import get_task  # lazy: decoder-side package

        instruction, category_ids = get_task(results["task"]).build(
            results, self._rng(), self.template_index, sample_categories=self.sample_categories,
            max_categories=self.max_categories, negative_ratio=self.negative_ratio)
        results["instruction"] = instruction.text
        results["categories"] = list(instruction.categories)
        results["category_ids"] = category_ids
        results["output_format"] = tuple(instruction.output_format.fields) if instruction.output_format else None
        return results
