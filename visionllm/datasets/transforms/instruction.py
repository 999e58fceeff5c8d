"""Instruction and target construction per task (uses ``visionllm.instructions``)."""
import random
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from visionllm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class BuildInstruction(BaseTransform):
    """Writes ``instruction``, ``categories``, ``category_ids``, ``output_format`` and the
    targets of the sample's ``task``.

    - detection / segmentation: training draws a shuffled, subsampled category set with
      negatives (``sample_category_set``); evaluation (``sample_categories=False``) names every
      dataset class in dataset order. ``gt_labels`` become indices into ``categories``;
      objects of categories left out of the set are dropped from the targets.
    - grounding: ``categories = [expression]``, every box has label 0.
    - caption: ``target_text`` is one reference caption (random in training, the first in
      evaluation); ``gt_texts`` keeps them all.
    - vqa: the question goes into the instruction; ``target_text`` is the dataset's answer. A
      follow-up turn of a conversation (``history`` set) keeps the question as the instruction.
    - caption / vqa boxes (readers with ``boxes_file``) keep label -1: they name no category and
      only supervise where the image tokens sit.

    Args:
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
        from visionllm.instructions import build_instruction, sample_category_set  # lazy: decoder-side module

        rng = self._rng()
        task = results["task"]
        kwargs = dict(template_index=self.template_index)
        if task in ("detection", "segmentation"):
            classes = list(results["classes"])
            labels = results.get("gt_labels", np.zeros(0, np.int64))
            if self.sample_categories:
                positives = [classes[i] for i in labels.tolist()]
                categories = sample_category_set(positives, classes, rng, self.max_categories, self.negative_ratio)
            else:
                categories = classes
            index_of = {name: i for i, name in enumerate(categories)}
            category_ids = [classes.index(name) for name in categories]
            keep = np.asarray([classes[i] in index_of for i in labels.tolist()], dtype=bool)
            self._select(results, keep)
            results["gt_labels"] = np.asarray([index_of[classes[i]] for i in results["gt_labels"].tolist()],
                                              dtype=np.int64)
            if task == "segmentation":
                kwargs["num_points"] = results.get("num_points")
            instruction = build_instruction(task, rng, categories=categories, **kwargs)
        elif task == "grounding":
            instruction = build_instruction(task, rng, expression=results["expression"], **kwargs)
            category_ids = [0]
            results["gt_labels"] = np.zeros(len(results.get("gt_bboxes", [])), dtype=np.int64)
        elif task == "caption":
            texts = list(results.get("gt_texts") or [])
            if texts and results.get("target_text") is None:
                results["target_text"] = rng.choice(texts) if self.template_index is None else texts[0]
            instruction = build_instruction(task, rng, **kwargs)
            category_ids = []
        elif task == "vqa" and results.get("history"):
            # A follow-up turn is asked as written: <image> stands in the history's first turn.
            results.update(instruction=results["question"], categories=[], category_ids=[], output_format=None)
            return results
        elif task == "vqa":
            instruction = build_instruction(task, rng, question=results["question"], **kwargs)
            category_ids = []
        else:
            raise ValueError(f"unknown task {task!r}")
        results["instruction"] = instruction.text
        results["categories"] = list(instruction.categories)
        results["category_ids"] = category_ids
        results["output_format"] = tuple(instruction.output_format.fields) if instruction.output_format else None
        return results

    @staticmethod
    def _select(results: dict, keep: np.ndarray) -> None:
        for key in ("gt_bboxes", "gt_labels"):
            if key in results:
                results[key] = results[key][keep]
        polygons = results.get("gt_polygons")
        if isinstance(polygons, np.ndarray):
            results["gt_polygons"] = polygons[keep]
        elif polygons is not None:
            results["gt_polygons"] = [p for p, k in zip(polygons, keep) if k]
