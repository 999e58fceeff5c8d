"""Detection: every object of the instruction's category set, as ``(c, x1, y1, x2, y2)``."""
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np

from visionllm.instructions.category_set import format_category_set, sample_category_set
from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.instructions.instruction import Instruction
from visionllm.instructions.output_format import OutputFormat
from visionllm.registry import TASKS

from .spec import InstructionParts, TaskSpec


@TASKS.register_module(name="detection")
class DetectionTask(TaskSpec):
    """Boxes of every object whose category is named in the instruction's category set
    ``{"cat": <c0>, ...}``; class token ``<ci>`` means the i-th name."""

    name = "detection"
    structured = True
    metric = dict(type="VisionLLMCocoMetric", metric="bbox", task="detection")
    templates = (
        "Detect every object of the categories {categories} in <image>. Answer as a list of {format}.",
        "Find all objects belonging to {categories} in <image> and list each one as {format}.",
        "<image> Locate every instance of the categories {categories}. Give each as {format}.",
        "Please detect the objects of {categories} that appear in <image>; output {format} for each.",
        "In <image>, where are the objects of {categories}? Reply with one {format} per object.",
        "Given the category set {categories}, detect all matching objects in <image> as {format}.",
        "Look at <image> and report the bounding box of every object from {categories}, formatted as {format}.",
        "Identify and localise each object in <image> whose category is in {categories}. Use the format {format}.",
        "<image> Object detection with categories {categories}. Each answer is {format}.",
        "List the bounding boxes of all {categories} objects visible in <image>, written as {format}.",
        "For the image <image>, detect the categories {categories} and return {format} for every detection.",
        "Which objects of {categories} are in <image>? Mark each one with a box {format}.",
        "Scan <image> for objects of the classes {categories} and answer with boxes in the form {format}.",
        "Categories: {categories}. Image: <image>. Detect all objects and give {format} per object.",
        "Draw a box around every instance of {categories} in <image>; describe each box as {format}.",
        "Output the class and box of each object from {categories} found in <image>, as {format}.",
    )

    def output_format(self, num_points: Optional[int] = None) -> OutputFormat:
        return OutputFormat.box()

    def fields(self, categories: Optional[Sequence[str]] = None, num_points: Optional[int] = None, **_):
        if categories is None or len(categories) == 0:
            raise ValueError(f"{self.name} instructions need a non-empty category set")
        names = list(categories)
        if len(set(names)) != len(names):
            raise ValueError("category names in one instruction must be distinct")
        output_format = self.output_format(num_points)
        return dict(categories=format_category_set(names), format=output_format.to_text()), names, output_format

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              sample_categories: bool = True, max_categories: int = 512, negative_ratio: float = 1.0,
              **_) -> Tuple[Instruction, List[int]]:
        """Training (``sample_categories``) draws a shuffled, subsampled category set with
        negatives (``sample_category_set``); evaluation names every dataset class in dataset
        order. ``gt_labels`` become indices into the instruction's categories; objects of
        categories left out of the set are dropped from the targets."""
        classes = list(results["classes"])
        labels = results.get("gt_labels", np.zeros(0, np.int64))
        if sample_categories:
            positives = [classes[i] for i in labels.tolist()]
            categories = sample_category_set(positives, classes, rng, max_categories, negative_ratio)
        else:
            categories = classes
        index_of = {name: i for i, name in enumerate(categories)}
        keep = np.asarray([classes[i] in index_of for i in labels.tolist()], dtype=bool)
        _select_objects(results, keep)
        results["gt_labels"] = np.asarray([index_of[classes[i]] for i in results["gt_labels"].tolist()],
                                          dtype=np.int64)
        instruction = self.instruction(rng, template_index, categories=categories,
                                       num_points=results.get("num_points"))
        return instruction, [classes.index(name) for name in categories]

    def recognises(self, parts: InstructionParts) -> bool:
        """A category set with a box format, or with none and no ``<region>`` (the model then
        generates the format; a region with a set of names asks to classify the region)."""
        if not parts.categories:
            return False
        if parts.output_format is None:
            return REGION_PLACEHOLDER not in parts.text
        return parts.output_format.kind == self.output_format().kind


def _select_objects(results: dict, keep: np.ndarray) -> None:
    """Keep the objects (boxes, labels, polygons) where ``keep`` is True."""
    for key in ("gt_bboxes", "gt_labels"):
        if key in results:
            results[key] = results[key][keep]
    polygons = results.get("gt_polygons")
    if isinstance(polygons, np.ndarray):
        results["gt_polygons"] = polygons[keep]
    elif polygons is not None:
        results["gt_polygons"] = [p for p, k in zip(polygons, keep) if k]
