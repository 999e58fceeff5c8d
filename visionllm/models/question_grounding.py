"""Questions about named objects, answered through the model's own grounding.

"Is the orange star left of the pink circle?" needs the two named objects and where they lie from
each other; "what color is the star?" needs the named object and what it looks like. The model's
grounding task finds a named object far more reliably than the answer does inside the LLM, and the
region parts answer about boxes: the region relations compare two (``RegionRelations``), the
region appearance reads one (``RegionAppearance``). Before such a question is answered, the model
therefore grounds each name (the grounding task's evaluation phrasing, one extra pass of the
tokenizer and the decoder for all names of a batch), and the question is answered as the region
question about the best boxes: "is <region> left of <region>?", "what colour is <region>?" or
"what shape is <region>?" ("what kind of shape is the red object?", "which shape is pink?").
"Is the star on the left or on the right?" is answered with the side of the image the centre of
the star's grounded box lies on. A follow-up in a conversation ("what colour is it?" after "is
there a star?") is read as the question it stands for (``self_contained_question``).

"Is there a red circle?" is answered by composition: "the red circle" is grounded, the region
questions "what colour is <region>?" and "what shape is <region>?" are asked about its best box
(one more pass for all such questions of a batch), and the answer is "yes" only when each gets
the asked word ("no" also when nothing is found). A hypernym ("is there a red shape?") checks the
colour only. Colours and kinds are words of the model's vocabulary (``QuestionGrounding``'s
``colours`` and ``kinds``); a presence question about other words is answered as asked, as are
all other questions.
"""
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch

from visionllm.models.follow_ups import self_contained_question
from visionllm.tasks import build_instruction, task_of_instruction
from visionllm.utils.english import plural

_NAME = r"(the [a-z][a-z -]*?)"
# "is the A (to the | on the) left|right (side) of the B?", "is the A above|below|over|under the B?"
_RELATIONS = (
    re.compile(rf"\bis {_NAME} (?:to the |on the )?(left|right)(?: side| hand side)? of {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bis {_NAME} (above|below|over|under) {_NAME}\s*\?", re.IGNORECASE),
)
_ASKS_SIDE_OF_IMAGE = re.compile(r"\bor\b|\bthe (image|picture|photo)\b", re.IGNORECASE)
_RELATION_WORDS = {"left": "left of", "right": "right of"}
# "what / which colour is the A?", "what is the colour of the A?", "which colour does the A have?",
# "the A is what colour?" (either spelling)
_COLOURS = (
    re.compile(rf"\b(?:what|which) colou?r is {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bwhat is the colou?r of {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bwhich colou?r does {_NAME} have\s*\?", re.IGNORECASE),
    re.compile(rf"(?:^|[:.]\s*|\s){_NAME} is what colou?r\s*\?", re.IGNORECASE),
)
# "what / which (kind of) shape is the A?", "what is the shape of the A?", "what shape does the A have?",
# "the A is what shape?" (also "thing" and "object" for "shape")
_H = r"(?:shape|thing|object)"
_SHAPES = (
    re.compile(rf"\b(?:what|which) (?:kind of |sort of |type of )?{_H} is {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\bwhat is the shape of {_NAME}\s*\?", re.IGNORECASE),
    re.compile(rf"\b(?:what|which) shape does {_NAME} have\s*\?", re.IGNORECASE),
    re.compile(rf"(?:^|[:.]\s*|\s){_NAME} is what shape\s*\?", re.IGNORECASE),
)
# "which shape is pink?": the name is "the pink shape"
_WHICH_SHAPE_IS = re.compile(rf"\b(?:what|which) (?:kind of |sort of |type of )?({_H}) is ([a-z]+)\s*\?", re.IGNORECASE)
# "is the A on the left or (on) the right (side) (of the image)?", "(on) which side (of the image) is
# the A (on)(, left or right)?"
_SIDES = (
    re.compile(rf"\bis {_NAME} on the (?:left|right)(?: side)? or (?:on )?the (?:left|right)(?: side)?"
               rf"(?: of the (?:image|picture|photo))?\s*\?", re.IGNORECASE),
    re.compile(rf"\bwhich side(?: of the (?:image|picture|photo))? is {_NAME}(?: on)?(?:,? left or right)?\s*\?",
               re.IGNORECASE),
)
_THE_IMAGE = ("the image", "the picture", "the photo")
# "is there a X?", "are there any Xs?", "do you see / can you find / can you spot a X?", "does the image
# contain a X?", "is a X visible?"; optionally "in the image / picture / photo"
_IN_IMAGE = r"(?: in (?:the|this) (?:image|picture|photo))?"
_PRESENCE = (
    re.compile(rf"\b(?:is there|are there) (?:an?|any|some) ([a-z ]+?){_IN_IMAGE}\s*\?", re.IGNORECASE),
    re.compile(rf"\b(?:do you see|can you see|can you find|can you spot) (?:an?|any|some) ([a-z ]+?){_IN_IMAGE}\s*\?",
               re.IGNORECASE),
    re.compile(r"\bdoes (?:the|this) (?:image|picture|photo) (?:contain|have|show) (?:an?|any|some) ([a-z ]+?)\s*\?",
               re.IGNORECASE),
    re.compile(rf"\bis (?:an?|any) ([a-z ]+?) (?:visible|present|there){_IN_IMAGE}\s*\?", re.IGNORECASE),
)
HYPERNYMS = ("shape", "object", "thing")


class GroundedQuestion(NamedTuple):
    """The names a question is about, in order, and how its answer comes from their grounded
    boxes: ``region_question`` asked about them (one ``<region>`` per name); or ``checks``, region
    questions about the first box and the answer each must get for "yes"; or ``side``, the side of
    the image ("left" / "right") the centre of the first box lies on."""
    names: Tuple[str, ...]
    region_question: Optional[str] = None
    checks: Tuple[Tuple[str, str], ...] = ()
    side: bool = False


def read_relation(question: str) -> Optional[Tuple[str, str, str]]:
    """``(first name, relation word, second name)`` of a question that asks whether one named
    thing lies left / right of, above / below another, or None."""
    for pattern in _RELATIONS:
        match = pattern.search(question)
        if match is not None:
            first, word, second = match.groups()
            if _ASKS_SIDE_OF_IMAGE.search(first) or _ASKS_SIDE_OF_IMAGE.search(second):
                return None  # "the left or the right side of the image" asks something else
            return first.strip(), word.lower(), second.strip()
    return None


def _read_name(question: str, patterns: Sequence[re.Pattern]) -> Optional[str]:
    """The name the first matching pattern captures, or None (also for the image itself)."""
    for pattern in patterns:
        match = pattern.search(question)
        if match is not None and not match.group(1).lower().startswith(_THE_IMAGE):
            return match.group(1).strip()
    return None


def read_shape_question(question: str) -> Optional[str]:
    """The name of the thing whose shape ``question`` asks for, or None."""
    name = _read_name(question, _SHAPES)
    if name is None:
        match = _WHICH_SHAPE_IS.search(question)
        if match is not None and match.group(2).lower() != "the":
            name = f"the {match.group(2)} {match.group(1)}"
    return name


def read_presence(question: str, colours: Sequence[str], kinds: Sequence[str],
                  hypernyms: Sequence[str] = HYPERNYMS) -> Optional[Tuple[str, str]]:
    """``(colour, kind or hypernym)`` of a question whether there is a thing of a colour and a
    kind ("is there a red circle?", "are there any red shapes?"), both singular, or None."""
    nouns = {**{plural(n): n for n in (*kinds, *hypernyms)}, **{n: n for n in (*kinds, *hypernyms)}}
    for pattern in _PRESENCE:
        match = pattern.search(question)
        if match is None:
            continue
        words = match.group(1).lower().split()
        if len(words) == 2 and words[0] in colours and words[1] in nouns:
            return words[0], nouns[words[1]]
        return None
    return None


def read_question(question: str) -> Optional[GroundedQuestion]:
    """What ``question`` is answered as through grounding, or None for a question answered as asked."""
    relation = read_relation(question)
    if relation is not None:
        first, word, second = relation
        return GroundedQuestion((first, second), f"is <region> {_RELATION_WORDS.get(word, word)} <region>?")
    name = _read_name(question, _COLOURS)
    if name is not None:
        return GroundedQuestion((name,), "what colour is <region>?")
    name = read_shape_question(question)
    if name is not None:
        return GroundedQuestion((name,), "what shape is <region>?")
    name = _read_name(question, _SIDES)
    if name is not None:
        return GroundedQuestion((name,), side=True)
    return None


def presence_question(colour: str, noun: str, kinds: Sequence[str]) -> GroundedQuestion:
    """Whether there is a ``colour`` ``noun``, answered by the region questions about the
    grounding of "the <colour> <noun>": its colour, and its shape when ``noun`` is a kind."""
    checks = [("what colour is <region>?", colour)]
    if noun in kinds:
        checks.append(("what shape is <region>?", noun))
    return GroundedQuestion((f"the {colour} {noun}",), None, tuple(checks))


def answer_words(text: Optional[str]) -> str:
    """``text`` lower-cased, with everything but letters and spaces dropped: how answers compare."""
    return re.sub(r"[^a-z ]", "", (text or "").lower()).strip()


class QuestionGrounding:
    """Which samples ask about named objects, their grounding samples, and the region question(s)
    each is answered as.

    Args:
        tasks: the tasks whose questions are read (by default VQA).
        colours: colour words the model answers "what colour is <region>?" with; with ``kinds``
            they enable presence questions by composition (none by default).
        kinds: kind words the model answers "what shape is <region>?" with.
        hypernyms: words for any kind ("is there a red shape?" checks the colour only).
    """

    def __init__(self, tasks: Sequence[str] = ("vqa",), colours: Sequence[str] = (), kinds: Sequence[str] = (),
                 hypernyms: Sequence[str] = HYPERNYMS):
        self.tasks = tuple(tasks)
        self.colours = tuple(colours)
        self.kinds = tuple(kinds)
        self.hypernyms = tuple(hypernyms)

    def read(self, question: str) -> Optional[GroundedQuestion]:
        """What ``question`` is answered as through grounding, or None for a question answered as asked."""
        grounded = read_question(question)
        if grounded is None and self.colours and self.kinds:
            presence = read_presence(question, self.colours, self.kinds, self.hypernyms)
            if presence is not None:
                grounded = presence_question(*presence, self.kinds)
        return grounded

    def rows(self, samples: Sequence) -> List[Tuple[int, GroundedQuestion]]:
        """``(index, what it is answered as)`` of each sample whose question is about named objects."""
        return read_rows(samples, self.tasks, self.read)

    @staticmethod
    def grounding_sample(sample, name: str):
        """A copy of ``sample`` that asks for the grounding of ``name`` instead, on its own."""
        instruction = build_instruction("grounding", None, expression=name, template_index=0)
        ground = inner_copy(sample)
        ground.set_metainfo(dict(instruction=instruction.text, task="grounding", categories=[name],
                                 category_ids=[0], output_format=tuple(instruction.output_format.fields),
                                 history=None, regions=None))
        return ground

    @staticmethod
    def region_question(sample, question: GroundedQuestion, grounded: Sequence) -> List:
        """Turn ``sample`` into ``question``'s region question about the best box of each of its
        grounding samples (after prediction); the asked instruction is kept as metainfo
        ``asked_instruction``, the boxes, in pixels of the input image, as ``grounded_boxes`` and the
        names they ground as ``grounded_names``.
        A name with no box leaves the sample as asked.

        For a question with ``checks`` the sample stays as asked and the return is one copy of it
        per check, asking that region question (answer them, then :meth:`compose`); when nothing
        is found its answer is "no" (metainfo ``composed_answer``) and the return is empty. A
        ``side`` question stays as asked with its answer as ``composed_answer``."""
        boxes = []
        for ground in grounded:
            pred = ground.pred_instances
            if len(pred.scores) == 0:
                if question.checks:
                    sample.set_metainfo(dict(composed_answer="no"))
                return []  # nothing found: answered as asked
            boxes.append(region_box(pred.bboxes[int(torch.argmax(pred.scores))]))
        sample.set_metainfo(dict(grounded_boxes=[box.tolist() for box in boxes], grounded_names=list(question.names)))
        if question.side:
            x1, _, x2, _ = boxes[0].tolist()
            w_scale = sample.metainfo.get("scale_factor", (1.0, 1.0))[0]
            centre_left = (x1 + x2) * w_scale < sample.metainfo["img_shape"][1]
            sample.set_metainfo(dict(composed_answer="left" if centre_left else "right"))
            return []
        if not question.checks:
            ask_about_boxes(sample, question.region_question, boxes)
            return []
        return [copy_asking(sample, region_question, boxes) for region_question, _ in question.checks]

    @staticmethod
    def compose(sample, question: GroundedQuestion, answered: Sequence) -> None:
        """Put on ``sample`` (metainfo ``composed_answer``) "yes" when each of ``question``'s
        checks got its answer in ``answered`` (the predicted copies :meth:`region_question`
        returned), else "no"."""
        right = all(answer_words(check.get("pred_text")) == expected
                    for check, (_, expected) in zip(answered, question.checks))
        sample.set_metainfo(dict(composed_answer="yes" if right else "no"))

    @staticmethod
    def restore(sample) -> None:
        """Give a sample answered as a region question its asked instruction and history back,
        and one answered by composition its composed answer."""
        if "asked_instruction" in sample.metainfo:
            sample.set_metainfo(dict(instruction=sample.metainfo["asked_instruction"], regions=None,
                                     history=sample.metainfo["asked_history"]))
        if "composed_answer" in sample.metainfo:
            sample.pred_text = sample.metainfo["composed_answer"]


def region_box(box: torch.Tensor) -> torch.Tensor:
    """``box`` (x1, y1, x2, y2) as a float CPU region with an area of at least one pixel."""
    box = box.float().cpu()
    return torch.cat([box[:2], torch.maximum(box[2:], box[:2] + 1)])


def inner_copy(sample):
    """A copy of ``sample`` for an inner pass, without the answer already composed for
    ``sample`` (the decoder does not generate a sample that has one)."""
    copy = sample.clone()
    if "composed_answer" in copy.metainfo:
        del copy.composed_answer
    return copy


def copy_asking(sample, region_question: str, boxes: Sequence[torch.Tensor]):
    """A copy of ``sample`` that asks ``region_question`` about ``boxes`` (:func:`ask_about_boxes`)."""
    copy = inner_copy(sample)
    ask_about_boxes(copy, region_question, boxes)
    return copy


def read_rows(samples: Sequence, tasks: Sequence[str], read) -> List[Tuple[int, object]]:
    """``(index, read(question))`` of each sample of ``tasks`` whose question (a follow-up read as
    the question it stands for, ``self_contained_question``) ``read`` does not answer None."""
    found = []
    for i, sample in enumerate(samples):
        instruction = sample.metainfo["instruction"]
        if task_of_instruction(instruction).name in tasks:
            question = read(self_contained_question(instruction, sample.metainfo.get("history")))
            if question is not None:
                found.append((i, question))
    return found


def ask_about_boxes(sample, region_question: str, boxes: Sequence[torch.Tensor]) -> None:
    """Make ``sample`` ask ``region_question`` about ``boxes`` (pixels of the input image, one per
    ``<region>``) on its own, keeping the asked instruction and conversation history as metainfo
    ``asked_instruction`` and ``asked_history``."""
    w_scale, h_scale = sample.metainfo.get("scale_factor", (1.0, 1.0))[:2]
    scale = torch.tensor([w_scale, h_scale, w_scale, h_scale])
    instruction = build_instruction("region_vqa", None, question=region_question, template_index=0)
    sample.set_metainfo(dict(asked_instruction=sample.metainfo["instruction"], instruction=instruction.text,
                             asked_history=sample.metainfo.get("history"), history=None,
                             regions=[(box * scale).tolist() for box in boxes]))


def build_question_grounding(config: Optional[dict]) -> Optional[QuestionGrounding]:
    """``QuestionGrounding(**config)``, or None for no config."""
    return None if config is None else QuestionGrounding(**config)
