"""Instruction phrasings per task, and ``build_instruction`` that fills one in.

Training samples a phrasing at random so the model follows the meaning, not one sentence;
template 0 of every task is the fixed phrasing used for evaluation. Placeholders:
``{categories}`` (the category set, ``{"cat": <c0>, ...}``), ``{format}`` (the output format,
``(c, x1, y1, x2, y2)`` or ``(c, x1, y1, ..., xK, yK)``), ``{expression}`` (quoted referring
expression, its class token is ``<c0>``) and ``{question}``. Every template holds ``<image>``
exactly once: the image tokens are spliced in there.
"""
import json
import random
from typing import Dict, Optional, Sequence, Tuple

from .category_set import IMAGE_PLACEHOLDER, format_category_set
from .instruction import TASKS, Instruction
from .output_format import MAX_POINTS, MIN_POLYGON_POINTS, OutputFormat

# K values the segmentation configs train with (the paper's polygon sizes).
SEGMENTATION_NUM_POINTS = (8, 14, 16, 20, 24)
DEFAULT_NUM_POINTS = 16

DETECTION_TEMPLATES: Tuple[str, ...] = (
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

SEGMENTATION_TEMPLATES: Tuple[str, ...] = (
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

GROUNDING_TEMPLATES: Tuple[str, ...] = (
    "Find {expression} in <image> and give {format}.",
    "Locate the object described by {expression} in <image>. Answer as {format}.",
    "<image> Where is {expression}? Reply with {format}.",
    "In <image>, which region matches {expression}? Give its box as {format}.",
    "Please ground the phrase {expression} in <image> and output {format}.",
    "Give the bounding box of {expression} in <image>, written as {format}.",
    "Look at <image> and find {expression}; answer with one box {format}.",
    "<image> Referring expression: {expression}. Output the box {format}.",
    "Point out {expression} in the image <image> with a box {format}.",
    "Which object in <image> is {expression}? Return {format}.",
    "Localise the region of <image> that the text {expression} refers to, as {format}.",
    "Image: <image>. Description: {expression}. Box of the described object as {format}.",
    "Draw a box around {expression} in <image> and report it as {format}.",
    "Show me where {expression} is in <image> using the format {format}.",
    "Detect the single object referred to by {expression} in <image>; format {format}.",
    "Identify {expression} within <image> and give its location as {format}.",
)

CAPTION_TEMPLATES: Tuple[str, ...] = (
    "<image> Write a short caption for the image.",
    "<image> Describe the image in one sentence.",
    "Give a brief description of <image>.",
    "<image> What does this image show? Answer with a short caption.",
    "Write a one-sentence caption for <image>.",
    "<image> Summarise the content of the picture briefly.",
    "Caption this image: <image>",
    "Look at <image> and describe what you see in a few words.",
    "<image> Provide a concise caption.",
    "Briefly describe the scene in <image>.",
    "<image> Generate a short description of this image.",
    "What is happening in <image>? Describe it in one sentence.",
    "Please write a caption that describes <image>.",
    "<image> Tell me briefly what is in the image.",
    "Produce a short, accurate caption for the picture <image>.",
    "<image> Describe the main objects in the image in one short sentence.",
)

VQA_TEMPLATES: Tuple[str, ...] = (
    "<image> Answer the question: {question}",
    "<image> {question} Answer with a word or a short phrase.",
    "Look at <image> and answer: {question}",
    "Question about <image>: {question} Answer briefly.",
    "<image> Question: {question} Answer:",
    "Based on <image>, {question}",
    "<image> Please answer the following question about the image. {question}",
    "Answer the question using the image <image>: {question}",
    "Image: <image>. Question: {question} Give a short answer.",
    "<image> Using the picture, reply to this question: {question}",
    "Consider <image>. {question} Reply in a few words.",
    "<image> I have a question about this image: {question}",
    "Given <image>, answer the question {question}",
    "<image> Respond to the question with a short answer. {question}",
    "From what you see in <image>, answer: {question}",
    "<image> Q: {question} A:",
)

TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "detection": DETECTION_TEMPLATES,
    "segmentation": SEGMENTATION_TEMPLATES,
    "grounding": GROUNDING_TEMPLATES,
    "caption": CAPTION_TEMPLATES,
    "vqa": VQA_TEMPLATES,
}
assert set(TEMPLATES) == set(TASKS)


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if IMAGE_PLACEHOLDER in value:
        raise ValueError(f"{what} may not contain {IMAGE_PLACEHOLDER}: {value!r}")
    return value.strip()


def build_instruction(task: str, rng: random.Random, *, categories: Optional[Sequence[str]] = None,
                      expression: Optional[str] = None, question: Optional[str] = None,
                      num_points: Optional[int] = None, template_index: Optional[int] = None) -> Instruction:
    """Fill one phrasing of ``task``.

    Args:
        task: one of ``'detection' | 'segmentation' | 'grounding' | 'caption' | 'vqa'``.
        rng: picks the phrasing (unused when ``template_index`` is given).
        categories: the category set, in class-token order (detection / segmentation).
        expression: the referring expression (grounding); the instruction's categories are
            ``[expression]`` so its class token is ``<c0>``.
        question: the question (VQA).
        num_points: polygon size K for segmentation (default 16).
        template_index: a fixed phrasing; 0 is the evaluation phrasing.
    """
    if task not in TEMPLATES:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TEMPLATES)}")
    templates = TEMPLATES[task]
    if template_index is None:
        template_index = rng.randrange(len(templates))
    elif not 0 <= template_index < len(templates):
        raise IndexError(f"template_index {template_index} out of range for {task} ({len(templates)} phrasings)")
    template = templates[template_index]

    output_format = None
    names = []
    fill = {}
    if task in ("detection", "segmentation"):
        if categories is None or len(categories) == 0:
            raise ValueError(f"{task} instructions need a non-empty category set")
        names = list(categories)
        if len(set(names)) != len(names):
            raise ValueError("category names in one instruction must be distinct")
        if task == "detection":
            output_format = OutputFormat.box()
        else:
            k = DEFAULT_NUM_POINTS if num_points is None else int(num_points)
            if not MIN_POLYGON_POINTS <= k <= MAX_POINTS:
                raise ValueError(f"num_points must be in {MIN_POLYGON_POINTS}..{MAX_POINTS}, got {num_points}")
            output_format = OutputFormat.polygon(k)
        fill = dict(categories=format_category_set(names), format=output_format.to_text())
    elif task == "grounding":
        if expression is None:
            raise ValueError("grounding instructions need an expression")
        expression = _check_text(expression, "expression")
        names = [expression]
        output_format = OutputFormat.box()
        fill = dict(expression=json.dumps(expression, ensure_ascii=False), format=output_format.to_text())
    elif task == "vqa":
        if question is None:
            raise ValueError("vqa instructions need a question")
        fill = dict(question=_check_text(question, "question"))

    text = template.format(**fill)
    return Instruction(task=task, text=text, categories=names, output_format=output_format)
