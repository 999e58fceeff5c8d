"""Captioning: a short description of the image."""
import random
import re
from typing import List, Optional, Tuple

from visionllm.instructions.instruction import Instruction
from visionllm.instructions.regions import REGION_PLACEHOLDER
from visionllm.registry import TASKS

from .reading import asks_question
from .spec import InstructionParts, TaskSpec


@TASKS.register_module(name="caption")
class CaptionTask(TaskSpec):
    """Free text: any request without an output format that is not a question and that no
    other task recognises."""

    name = "caption"
    fallback = True
    metric = dict(type="CaptionMetric")
    templates = (
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

    # Instructions that ask for one caption style. A caption whose style is named in the data
    # (``gt_text_styles``) is trained with its style's phrasings, so the target is predictable from
    # the instruction; the plain phrasings above ask for the ``objects`` style (every object with
    # its colour), and for any caption of data without styles.
    style_templates = {
        "kinds": (
            "<image> List the kinds of shapes in the image, without their colours.",
            "Describe <image> by naming only the kinds of the objects.",
            "<image> Write a caption that names the shapes' kinds but not their colours.",
            "Name the kinds of objects you see in <image>, leaving out colours.",
        ),
        "count": (
            "<image> Write a caption that only says how many objects there are.",
            "Describe <image> with just the number of shapes.",
            "<image> Give a short caption stating only the number of objects.",
            "Summarise <image> as a count of its shapes.",
        ),
        "count_objects": (
            "<image> Write a caption that gives the number of shapes, then lists each with its colour.",
            "Describe <image>: first the number of objects, then every object with its colour.",
            "<image> Caption the image with a count of the shapes followed by the full list.",
        ),
        "relation": (
            "<image> Describe where one shape is relative to another.",
            "Write a caption for <image> about the position of two objects relative to each other.",
            "<image> Describe the picture by relating two of the shapes in position.",
        ),
    }

    def build(self, results: dict, rng: random.Random, template_index: Optional[int] = None,
              **_) -> Tuple[Instruction, List[int]]:
        """``target_text`` is one reference caption: in training a random one, asked for with its
        style's phrasings when the data names its style (``gt_text_styles``); with a fixed
        phrasing the first ``objects``-style caption (else the first). ``gt_texts`` keeps them
        all."""
        texts = list(results.get("gt_texts") or [])
        styles = list(results.get("gt_text_styles") or [None] * len(texts))
        if texts and results.get("target_text") is None:
            if template_index is not None:
                results["target_text"] = texts[styles.index("objects")] if "objects" in styles else texts[0]
            else:
                index = rng.randrange(len(texts))
                results["target_text"] = texts[index]
                phrasings = self.style_templates.get(styles[index])
                if phrasings is not None:
                    return Instruction(task=self.name, text=rng.choice(phrasings)), []
        return self.instruction(rng, template_index), []

    def phrasings(self) -> Tuple[str, ...]:
        return tuple(self.templates) + tuple(t for ts in self.style_templates.values() for t in ts)

    def requested_style(self, instruction: str) -> Optional[str]:
        """The caption style ``instruction`` asks for: a key of ``style_templates`` when it is one
        of that style's phrasings or asks in its words (only the number, the number then the
        list, the kinds without colours, two objects' positions), else None (the plain caption)."""
        text = " ".join(instruction.lower().split())
        for style, phrasings in self.style_templates.items():
            if text in (" ".join(p.lower().split()) for p in phrasings):
                return style
        for style, pattern in _STYLE_WORDS:
            if pattern.search(text):
                return style
        return None

    def recognises(self, parts: InstructionParts) -> bool:
        return (parts.output_format is None and not parts.categories and REGION_PLACEHOLDER not in parts.text
                and not asks_question(parts.text))


# Words that ask for a style in a user's own phrasing, checked in order (a count followed by a
# list before a count alone).
_NUMBER = r"(?:how many|number of|count)"
_STYLE_WORDS = (
    ("count_objects", re.compile(rf"\b{_NUMBER}\b.*\b(?:then|followed by|and (?:then )?(?:list|name))")),
    ("count", re.compile(rf"\b{_NUMBER}\b")),
    # a negation and at most two words before "colours": "without the colours", "without mentioning colours"
    ("kinds", re.compile(r"\b(?:without|leaving out|leave out|not|no|ignoring|ignore|omitting|omit)(?: [\w']+){0,2} "
                         r"colou?rs?\b|\bonly the kinds\b")),
    ("relation", re.compile(r"\brelative(?:ly)? to\b|\bwhere (?:one|a) (?:shape|object|thing) is\b")),
)
