"""Plain-language requests about a shapes image, each with its canonical form (the target of
the ``request`` task, ``visionllm.tasks.request``).

A request has an *intent* (what it asks for) and a *template* (how it is worded). The
templates of every intent are split deterministically: every fourth one (index 3, 7, ...) is
held out, so a model trained on ``split='train'`` is measured on wordings it never saw. The
training split can add the composed wordings of ``plain_request_composition`` (by default half of
the training draws), none of which shares a run of four words with a held-out template.

What is asked is drawn independently of the wording and of the answer: categories of a
detection request are present or absent alike, presence questions ask about a present and an
absent object with equal chance, counts ask about any kind. The canonical question of a VQA
request is the shapes data's own question form ("how many stars are there?", "is there a red
star?"), the one the VQA training data answers; "List every shape you can find" asks for
detection over every class of the dataset (finding and listing are localisation; "describe"
asks for a caption).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from visionllm.tasks.request import canonical_text
from visionllm.utils.english import article, join, plural

from .plain_request_composition import composed_templates, fill

HELDOUT_EVERY = 4
# Share of training draws worded by a composed template (the rest by a fixed one).
COMPOSED_SHARE = 0.5
SPLITS = ("train", "heldout")

# intent -> (task, templates). Slots: {plurals} "stars and hexagons", {any_of} "a star or a
# hexagon", {kinds_or} "star or hexagon", {expr} a referring expression, {kind}, {kinds} (plural),
# {np} "red star", {a} its article, {nps} "red stars", {colour}.
INTENTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "detect": ("detection", (
        "Find all {plurals} in <image>.",
        "Please locate every {kinds_or} in <image>.",
        "<image> Where are the {plurals}?",
        "Detect the {plurals} in <image>.",
        "Can you find any {plurals} in <image>?",
        "Show me every {kinds_or} in <image>.",
        "Mark all {plurals} in <image> with boxes.",
        "<image> Put a bounding box around each {kinds_or}.",
        "I need the boxes of all {plurals} in <image>.",
        "Draw boxes around the {plurals} in <image>, as (c, x1, y1, x2, y2).",
        "Find every {kinds_or} in <image> and answer as a list of (c, x1, y1, x2, y2).",
        "<image> Look for {any_of} and box each one you find.",
    )),
    "detect_all": ("detection", (
        "<image> List every shape you can find.",
        "Find all the shapes in <image>.",
        "Detect every object in <image>.",
        "Where are all the shapes in <image>?",
        "<image> Locate everything you can see.",
        "Mark each shape in <image> with a box.",
        "<image> Show me all the objects.",
        "Can you box every shape in <image>?",
    )),
    "segment": ("segmentation", (
        "Outline every {kinds_or} in <image>.",
        "Segment the {plurals} in <image>.",
        "Trace the contours of all {plurals} in <image>.",
        "<image> Give me a polygon for each {kinds_or}.",
        "Draw the outline of every {kinds_or} in <image>.",
        "Please segment all {plurals} in <image> as polygons.",
        "Can you outline the {plurals} in <image>?",
        "<image> I need the masks of all {plurals}.",
    )),
    "ground": ("grounding", (
        "Please locate {expr} in <image>.",
        "<image> Where is {expr}?",
        "Find {expr} in <image>.",
        "Show me {expr} in <image>.",
        "Can you point out {expr} in <image>?",
        "Give me the box of {expr} in <image>.",
        "Put a box around {expr} in <image>.",
        "Where in <image> is {expr}?",
        "Locate {expr} in <image> and answer as (c, x1, y1, x2, y2).",
        "<image> I am looking for {expr}.",
        "Highlight {expr} in <image>.",
        "<image> Which one is {expr}? Box it.",
    )),
    "count": ("vqa", (
        "How many {kinds} are in <image>?",
        "<image> Count the {kinds}.",
        "Can you count the {kinds} in <image>?",
        "<image> How many {kinds} do you see?",
        "Tell me the number of {kinds} in <image>.",
        "What is the number of {kinds} in <image>?",
        "<image> Please count how many {kinds} there are.",
        "Count every {kind} in <image>.",
    )),
    "presence": ("vqa", (
        "Is there {a} {np} in <image>?",
        "<image> Do you see {a} {np}?",
        "Does <image> contain {a} {np}?",
        "<image> Can you spot {a} {np}?",
        "Is {a} {np} visible in <image>?",
        "<image> Tell me whether there is {a} {np}.",
        "Are there any {nps} in <image>?",
        "Check if <image> has {a} {np}.",
    )),
    "colour": ("vqa", (
        "What colour is the {kind} in <image>?",
        "<image> Which colour does the {kind} have?",
        "Tell me the colour of the {kind} in <image>.",
        "<image> What color is the {kind}?",
        "In <image>, the {kind} is what colour?",
        "Name the colour of the {kind} in <image>.",
        "<image> Can you tell me what colour the {kind} is?",
        "What is the color of the {kind} in <image>?",
    )),
    "describe": ("caption", (
        "Describe <image>.",
        "<image> What do you see?",
        "<image> What is in this picture?",
        "Tell me about <image>.",
        "Give me a description of <image>.",
        "<image> Can you describe this image for me?",
        "Summarise what <image> shows.",
        "<image> Write something about this picture.",
    )),
    "unsupported": (None, (
        "<image> Translate this into French.",
        "<image> Write a poem about the sea.",
        "<image> Make the image brighter.",
        "<image> Tell me a joke.",
        "<image> Generate a new picture of a cat.",
        "<image> Remove the background.",
        "<image> Convert this image to black and white.",
        "<image> Book a flight to Paris.",
        "<image> Play some music.",
        "<image> Compute 17 times 23.",
        "<image> Send this picture to my email.",
        "<image> Translate the text into German.",
    )),
}


def templates(intent: str, split: str) -> List[Tuple[int, str]]:
    """``(index, template)`` of one intent's fixed templates in a phrasing split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    heldout = split == "heldout"
    return [(i, t) for i, t in enumerate(INTENTS[intent][1]) if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == heldout]


def heldout_templates() -> Tuple[str, ...]:
    """Every intent's held-out templates."""
    return tuple(t for intent in INTENTS for _, t in templates(intent, "heldout"))


def composed(intent: str) -> List[Tuple[int, str]]:
    """``(index, template)`` of one intent's composed training wordings, numbered after its fixed
    templates."""
    first = len(INTENTS[intent][1])
    return [(first + i, t) for i, t in enumerate(composed_templates(intent, heldout_templates()))]


@dataclass(frozen=True)
class PlainRequest:
    """One request: its words (with ``<image>``), canonical form, task (None: unsupported),
    intent, template index and, for presence questions, the true answer."""

    request: str
    canonical: str
    task: Optional[str]
    intent: str
    template: int
    answer: Optional[str] = None


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _kind_set(rng: np.random.Generator, present: Sequence[str], classes: Sequence[str]) -> List[str]:
    """1-3 distinct kinds, each present or absent with equal chance where both exist."""
    absent = [c for c in classes if c not in present]
    chosen: List[str] = []
    for _ in range(int(rng.integers(1, 4))):
        pool = [c for c in (present if (rng.random() < 0.5 or not absent) else absent) if c not in chosen]
        pool = pool or [c for c in classes if c not in chosen]
        if pool:
            chosen.append(_pick(rng, pool))
    return chosen


def plain_request(intent: str, objects: Sequence[Tuple[str, str]], expressions: Sequence[str],
                  classes: Sequence[str], colours: Sequence[str], rng: np.random.Generator,
                  split: str = "train", composed_share: float = COMPOSED_SHARE) -> Optional[PlainRequest]:
    """One request of ``intent`` about an image with ``objects`` ``[(kind, colour)]`` and
    referring ``expressions``; ``None`` when the image cannot carry it (no expression to
    ground, no kind that occurs once to ask the colour of). In the training split a share
    ``composed_share`` of the requests is worded by a composed template (0: the fixed templates
    alone, with no extra draw from ``rng``)."""
    task, _ = INTENTS[intent]
    use_composed = split == "train" and composed_share > 0 and rng.random() < composed_share
    wordings = composed(intent) if use_composed else templates(intent, split)
    index, template = _pick(rng, wordings)
    kinds_present = sorted({k for k, _ in objects})
    answer = None
    if intent in ("detect", "segment"):
        kinds = _kind_set(rng, kinds_present, classes)
        slots = dict(plurals=join([plural(k) for k in kinds]), kinds_or=" or ".join(kinds),
                     any_of=" or ".join(f"{article(k)} {k}" for k in kinds))
        canonical = canonical_text(task, categories=kinds)
    elif intent == "detect_all":
        slots, canonical = {}, canonical_text(task, categories=list(classes))
    elif intent == "ground":
        usable = [e for e in expressions if e.startswith("the ")]
        if not usable:
            return None
        expression = _pick(rng, usable)
        slots, canonical = dict(expr=expression), canonical_text(task, expression=expression)
    elif intent == "count":
        kind = _pick(rng, classes)
        slots = dict(kind=kind, kinds=plural(kind))
        canonical = canonical_text(task, question=f"how many {plural(kind)} are there?")
    elif intent == "presence":
        pairs = sorted(set(objects))
        absent = [(k, c) for k in classes for c in colours if (k, c) not in pairs]
        answer = "yes" if rng.random() < 0.5 else "no"
        if not (pairs if answer == "yes" else absent):
            return None
        kind, colour = _pick(rng, pairs if answer == "yes" else absent)
        noun = f"{colour} {kind}"
        slots = dict(a=article(noun), np=noun, nps=f"{colour} {plural(kind)}")
        canonical = canonical_text(task, question=f"is there {article(noun)} {noun}?")
    elif intent == "colour":
        unique = [k for k in kinds_present if sum(o[0] == k for o in objects) == 1]
        if not unique:
            return None
        kind = _pick(rng, unique)
        slots, canonical = dict(kind=kind), canonical_text(task, question=f"what color is the {kind}?")
    else:  # describe, unsupported
        slots, canonical = {}, canonical_text(task)
    return PlainRequest(request=fill(template, **slots), canonical=canonical, task=task, intent=intent,
                        template=index, answer=answer)


def plain_requests(objects: Sequence[Tuple[str, str]], expressions: Sequence[str], classes: Sequence[str],
                   colours: Sequence[str], rng: np.random.Generator, count: int, split: str = "train",
                   first_intent: int = 0, composed_share: float = COMPOSED_SHARE) -> List[PlainRequest]:
    """``count`` requests about one image, intents in turn from ``first_intent`` (an intent the
    image cannot carry is skipped)."""
    names = list(INTENTS)
    requests: List[PlainRequest] = []
    for step in range(len(names) * count):
        if len(requests) == count:
            break
        made = plain_request(names[(first_intent + step) % len(names)], objects, expressions, classes, colours,
                             rng, split, composed_share)
        if made is not None:
            requests.append(made)
    return requests
