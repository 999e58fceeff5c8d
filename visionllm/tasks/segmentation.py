"""Instance segmentation: every object of the category set as a K-point polygon."""
from typing import Optional

from visionllm.instructions.output_format import MAX_POINTS, MIN_POLYGON_POINTS, OutputFormat
from visionllm.registry import TASKS

from .detection import DetectionTask

# K values the segmentation configs train with (the paper's polygon sizes).
SEGMENTATION_NUM_POINTS = (8, 14, 16, 20, 24)
DEFAULT_NUM_POINTS = 16


@TASKS.register_module(name="segmentation")
class SegmentationTask(DetectionTask):
    """As detection, each object answered by a polygon ``(c, x1, y1, ..., xK, yK)`` (K from
    ``num_points``, default 16; a sample's ``num_points`` in training)."""

    name = "segmentation"
    metric = dict(type="VisionLLMCocoMetric", metric=["bbox", "segm"], task="segmentation")
    templates = (
        "Segment all {categories} in <image> as {format}, points relative to the object centre.",
        "Find every object of the categories {categories} in <image> and outline it as a polygon {format}.",
        "<image> Perform instance segmentation for {categories}. Describe each instance by {format}.",
        "Please segment each instance of {categories} appearing in <image>; give its contour as {format}.",
        "In <image>, outline every object from {categories} with a polygon written as {format}.",
        "Given the category set {categories}, produce an instance mask polygon {format} for each object in <image>.",
        "Trace the boundary of every object of {categories} in <image> and answer with {format}.",
        "<image> Instance segmentation with categories {categories}. Each answer is a polygon {format}.",
        "Return the polygons of all {categories} objects visible in <image>, formatted as {format}.",
        "For the image <image>, segment the classes {categories}; output {format} for every instance.",
        "Which objects of {categories} are in <image>? Outline each one as {format}.",
        "Categories: {categories}. Image: <image>. Segment every object and give {format} per instance.",
        "Delineate each instance of {categories} in <image> by a polygon of the form {format}.",
        "Scan <image> for objects of the classes {categories} and give each object's shape as {format}.",
        "Mark the outline of all objects belonging to {categories} in <image> using polygons {format}.",
        "Output the class and contour of each object from {categories} found in <image>, as {format}.",
    )

    def output_format(self, num_points: Optional[int] = None) -> OutputFormat:
        k = DEFAULT_NUM_POINTS if num_points is None else int(num_points)
        if not MIN_POLYGON_POINTS <= k <= MAX_POINTS:
            raise ValueError(f"num_points must be in {MIN_POLYGON_POINTS}..{MAX_POINTS}, got {num_points}")
        return OutputFormat.polygon(k)

    def recognises(self, parts) -> bool:
        return parts.output_format is not None and parts.output_format.kind == "polygon" and bool(parts.categories)
