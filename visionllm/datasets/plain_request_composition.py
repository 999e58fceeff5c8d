"""Composed training wordings of plain requests: many more ways of asking than the fixed
templates of ``plain_request_phrasing``, so that a model learns which words carry the task
(a verb such as "outline" or "count", a question word, the class names) rather than a few
whole sentences.

A composed template joins a *frame* (where the image goes, courtesy: "Please {core} in
<image>.", "<image> Can you {core}?") with a *core* (a verb and its object: "mark every
{kinds_or}") or is a whole question. The slots are those of ``plain_request_phrasing``.

Composed wordings are training wordings only, and stay apart from the held-out templates: a
composed template is dropped when it shares any run of ``SHARED_RUN`` words (slots count as
words, ``<image>`` and punctuation do not) with a held-out template, so the held-out split still
measures wordings a model never saw, not the same sentence with "Please" in front.
"""
import itertools
import re
from functools import lru_cache
from typing import Dict, Iterable, List, Sequence, Tuple

SHARED_RUN = 4

# Frames of a core that ends where "in <image>" can follow.
_FRAMES = (
    "{Core} in <image>.",
    "<image> {Core}.",
    "Please {core} in <image>.",
    "<image> Please {core}.",
    "Could you {core} in <image>?",
    "<image> Can you {core}?",
    "I'd like you to {core} in <image>.",
    "In <image>, {core}.",
    "Help me {core} in <image>.",
    "<image> I want you to {core}.",
    "Would you {core} in this picture? <image>",
    "Kindly {core} in the image <image>.",
)
# Frames of a request that is not about the image's contents (no "in <image>").
_DETACHED_FRAMES = (
    "<image> {Core}.",
    "<image> Please {core}.",
    "<image> Can you {core}?",
    "<image> I want you to {core}.",
    "<image> Could you {core} for me?",
    "{Core}, using <image>.",
)

_MANY = ("all {plurals}", "all the {plurals}", "every {kinds_or}", "each {kinds_or}", "any {plurals}",
         "the {plurals}", "{plurals}", "all of the {plurals}", "every single {kinds_or}")
_EVERYTHING = ("all the shapes", "every shape", "every object", "all objects", "everything", "each shape",
               "all the things", "every item", "all shapes", "each object", "all of the objects")

_CORES: Dict[str, Tuple[Sequence[str], Sequence[str]]] = {
    # intent: (verbs, objects); a core is "verb object"
    "detect": (("find", "locate", "detect", "spot", "mark", "box", "identify", "pick out", "point out",
                "highlight", "search for", "look for", "draw a box around", "put boxes on",
                "give me the boxes of", "give the positions of", "return the bounding boxes of", "label",
                "get the coordinates of", "show the locations of"), _MANY),
    "detect_all": (("find", "locate", "detect", "mark", "box", "identify", "pick out", "list",
                    "point out", "highlight", "draw a box around", "give me the boxes of",
                    "give the positions of", "label", "get the coordinates of"), _EVERYTHING),
    "segment": (("outline", "segment", "trace", "mask", "cut out", "draw the outline of",
                 "draw the contours of", "give me the outlines of", "give polygons for", "give me masks for",
                 "produce a mask for", "get the silhouettes of", "delineate", "make segmentation masks of",
                 "return polygons around"), _MANY),
    "ground": (("find", "locate", "point to", "point at", "box", "mark", "highlight", "show", "spot",
                "draw a box around", "give me the position of", "give the location of", "pick out",
                "identify", "get the coordinates of", "select"), ("{expr}",)),
    "count": (("count", "count all the", "count up the", "give me the number of", "tell me the count of",
               "work out the number of", "find the number of", "report how many there are of the"),
              ("{kinds}",)),
    "describe": (("describe", "caption", "summarise", "write a caption for", "give a short description of",
                  "say what is in", "explain what is shown in", "tell me what you see in", "give an overview of",
                  "describe the contents of"), ("the picture", "this image", "the scene", "it")),
    "unsupported": (("translate", "read aloud", "print", "email", "tweet", "upload",
                     "delete", "sharpen", "blur", "crop", "rotate", "resize", "recolour", "enlarge", "shrink",
                     "flip", "invert", "animate", "colourise"),
                    ("this", "the picture", "the photo", "the red square", "the stars", "every circle",
                     "the background", "the triangles")),
}

# Whole questions and requests whose words do not split into verb and object.
_QUESTIONS: Dict[str, Sequence[str]] = {
    "detect": ("Where can I find {any_of} in <image>?", "What are the locations of the {plurals} in <image>?",
               "<image> Where do you see {plurals}?", "Which parts of <image> contain {plurals}?",
               "<image> Where exactly are the {plurals}?", "Where in the picture are the {plurals}? <image>",
               "<image> Are there {plurals}? Box them.", "<image> {Plurals}: where are they?",
               "<image> I'm looking for {plurals}. Where are they?"),
    "detect_all": ("<image> What shapes are there and where?", "Where is everything in <image>?",
                   "<image> Which objects are there? Box them all.", "What objects does <image> contain, and where?",
                   "<image> Where is each object?", "Give me a box for every shape in <image>."),
    "segment": ("<image> What are the exact outlines of the {plurals}?",
                "What do the {plurals} in <image> look like as polygons?",
                "<image> Polygons of the {plurals}, please.", "<image> Which pixels belong to the {plurals}?",
                "<image> Segmentation of every {kinds_or}, please."),
    "ground": ("Where's {expr} in <image>?", "Where can I find {expr} in <image>?", "<image> Where exactly is {expr}?",
               "What is the position of {expr} in <image>?", "<image> Can you tell me where {expr} is?",
               "<image> {Expr}: where is it?", "<image> Which object is {expr}?",
               "In <image>, where would I find {expr}?", "<image> Tell me where {expr} is located.",
               "Box {expr} for me. <image>"),
    "count": ("How many {kinds} are there in <image>?", "How many {kinds} can you see in <image>?",
              "<image> How many {kinds} are there?", "What's the number of {kinds} in <image>?",
              "<image> Number of {kinds}?", "How many {kinds} does <image> contain?",
              "How many {kinds} does <image> show?", "<image> What is the count of {kinds}?",
              "<image> {Kinds}: how many?", "Count how many {kinds} <image> has."),
    "presence": ("Is there any {np} in <image>?", "Are there {nps} in <image>?", "<image> Is there {a} {np} anywhere?",
                 "Do you see any {nps} in <image>?", "Does <image> have {a} {np}?", "Does <image> show {a} {np}?",
                 "Can I see {a} {np} in <image>?", "<image> Is {a} {np} present?",
                 "Tell me if there is {a} {np} in <image>.", "<image> Any {nps}?",
                 "Is there at least one {np} in <image>?", "Are any {nps} visible in <image>?",
                 "<image> Does the picture contain {a} {np}?", "<image> Is there {a} {np} here?",
                 "Please tell me whether <image> has {a} {np}.", "Could you check for {a} {np} in <image>?"),
    "colour": ("<image> What colour is the {kind}?", "What's the colour of the {kind} in <image>?",
               "<image> Which colour is the {kind}?", "What colour does the {kind} in <image> have?",
               "Tell me what colour the {kind} in <image> is.", "<image> The {kind} is which colour?",
               "<image> Colour of the {kind}?", "What's the color of the {kind} in <image>?",
               "<image> Which color is the {kind}?", "What color does the {kind} in <image> have?",
               "<image> What colour has the {kind} got?", "Please name the {kind}'s colour in <image>.",
               "In <image>, what colour is the {kind} painted?"),
    "describe": ("What does <image> show?", "What can you see in <image>?", "<image> What's in the picture?",
                 "<image> What is going on here?", "Can you caption <image>?", "What is shown in <image>?",
                 "<image> What does this image contain?", "How would you describe <image>?",
                 "<image> Describe what you see.", "<image> Say what this picture shows."),
    "unsupported": ("<image> What will the weather be tomorrow?", "<image> Who won the football match?",
                    "<image> Write a story about a dragon.", "<image> Compose a haiku about autumn.",
                    "<image> What time is it in Tokyo?", "<image> Order a pizza for me.",
                    "<image> Set an alarm for seven.", "<image> Sing me a song.", "<image> Draw a cat.",
                    "<image> Generate a logo for my shop.", "<image> Make the stars bigger.",
                    "<image> Paint the circles blue.", "<image> Move the hexagon to the left.",
                    "<image> Add a star to the picture.", "<image> Replace the square with a circle.",
                    "<image> Change the background to green.", "<image> What is the capital of France?",
                    "<image> Explain quantum physics.", "<image> Recommend a good book.",
                    "<image> Write this in Spanish.", "<image> Turn this into a cartoon.",
                    "<image> How do I bake bread?", "<image> Call my mother.", "<image> Solve 12 plus 30."),
}


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _with_core(frame: str, core: str) -> str:
    return frame.replace("{Core}", _capitalised(core)).replace("{core}", core)


def fill(template: str, **slots: str) -> str:
    """A composed template with its slots filled; a capitalised slot (``{Expr}``) gets its
    value with a capital first letter."""
    capitals = {_capitalised(name): _capitalised(value) for name, value in slots.items()}
    return template.format(**slots, **capitals)


def words(template: str) -> List[str]:
    """The template's words in lower case, slots as words (``{plurals}``), without ``<image>``
    and punctuation."""
    return re.findall(r"\{[a-z_]+\}|[a-z']+", template.replace("<image>", " ").lower())


def word_runs(text: str, length: int = SHARED_RUN) -> set:
    """Every run of ``length`` consecutive ``words`` of ``text``."""
    w = words(text)
    return {tuple(w[i:i + length]) for i in range(len(w) - length + 1)}


def shared_runs(template: str, others: Iterable[str], length: int = SHARED_RUN) -> List[Tuple[str, ...]]:
    """The runs of ``length`` words ``template`` shares with any of ``others``."""
    return sorted(word_runs(template, length) & set().union(*(word_runs(o, length) for o in others)))


def _candidates(intent: str) -> List[str]:
    out = list(_QUESTIONS.get(intent, ()))
    if intent in _CORES:
        verbs, objects = _CORES[intent]
        frames = _DETACHED_FRAMES if intent == "unsupported" else _FRAMES
        for frame, verb, obj in itertools.product(frames, verbs, objects):
            out.append(_with_core(frame, f"{verb} {obj}"))
    return out


@lru_cache(maxsize=None)
def composed_templates(intent: str, heldout: Tuple[str, ...]) -> Tuple[str, ...]:
    """The composed training templates of ``intent``, in a fixed order, without any that shares
    a run of ``SHARED_RUN`` words with the ``heldout`` templates."""
    forbidden = set().union(*(word_runs(t) for t in heldout))  # the held-out runs, read once
    kept, seen = [], set()
    for template in _candidates(intent):
        if template not in seen and not word_runs(template) & forbidden:
            seen.add(template)
            kept.append(template)
    return tuple(kept)
