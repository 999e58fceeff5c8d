"""Questions, referring expressions and captions of the *varied* shapes style.

Every text is computed from the drawn objects (``Thing``: kind, colour name, the centre of the
visible part's box, circumradius), and the wording is drawn independently of the answer:

- several phrasings per question kind, hypernyms ("shape", "object", "thing");
- yes/no questions draw their answer first (yes or no with equal chance) and then a question
  with that answer, so every phrasing is answered yes and no alike; presence questions ask
  about absent things as often as about present ones;
- positions compare box centres with a margin, sizes compare radii with a ratio, so every
  statement holds clearly (and a horizontal flip only swaps left and right).

Positional words refer to the objects' places relative to each other, except the one VQA kind
that asks for the side of the image ("is the star on the left or the right side of the
image?"); the crop augmentation leaves every text sample with a position word uncropped.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from visionllm.utils.english import article, count_phrase, join, plural

KINDS = ("circle", "square", "triangle", "star", "hexagon", "diamond")
HYPERNYMS = ("shape", "object", "thing")
POSITION_MARGIN = 0.08  # fraction of the image side two centres must differ by
SIZE_RATIO = 1.4  # "big"/"small" when the radius differs by this factor from every other


@dataclass(frozen=True)
class Thing:
    kind: str
    colour: str
    cx: float
    cy: float
    radius: float


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _name(t: Thing, with_colour: bool = True) -> str:
    return f"{t.colour} {t.kind}" if with_colour else t.kind


def _unique(things: Sequence[Thing], t: Thing, with_colour: bool) -> bool:
    return sum(o.kind == t.kind and (not with_colour or o.colour == t.colour) for o in things) == 1


# ----------------------------------------------------------------------------- referring expressions
_SIDES = {  # direction -> (axis, sign: +1 = larger coordinate), phrasings with {np}
    "left": (0, -1, ("the {np} on the left", "the leftmost {np}", "the {np} furthest to the left")),
    "right": (0, 1, ("the {np} on the right", "the rightmost {np}", "the {np} furthest to the right")),
    "top": (1, -1, ("the {np} at the top", "the topmost {np}", "the highest {np}")),
    "bottom": (1, 1, ("the {np} at the bottom", "the lowest {np}", "the bottommost {np}")),
}
_RELATIONS = {  # relation -> (axis, sign of target minus anchor), phrasings
    "left of": (0, -1, ("the {np} to the left of the {anchor}", "the {np} left of the {anchor}")),
    "right of": (0, 1, ("the {np} to the right of the {anchor}", "the {np} right of the {anchor}")),
    "above": (1, -1, ("the {np} above the {anchor}",)),
    "below": (1, 1, ("the {np} below the {anchor}",)),
}


def _beyond(a: Thing, b: Thing, axis: int, sign: int, margin: float) -> bool:
    """Whether ``a``'s centre lies past ``b``'s by ``margin`` in direction (axis, sign)."""
    da = (a.cx - b.cx) if axis == 0 else (a.cy - b.cy)
    return sign * da > margin


def referring_expressions(things: Sequence[Thing], index: int, width: int, height: int,
                          rng: np.random.Generator, max_expressions: int = 4) -> List[str]:
    """Up to ``max_expressions`` expressions (drawn among all that hold) that single out
    ``things[index]``; empty when none does."""
    t = things[index]
    margins = (POSITION_MARGIN * width, POSITION_MARGIN * height)
    found = []
    if _unique(things, t, with_colour=False):
        found += [f"the {t.kind}", f"the {t.kind} shape"]
    if _unique(things, t, with_colour=True):
        found += [f"the {t.colour} {t.kind}", f"the {t.kind} that is {t.colour}"]
    if sum(o.colour == t.colour for o in things) == 1:
        found.append(f"the {t.colour} {_pick(rng, HYPERNYMS)}")
    groups = []
    same_ck = [o for o in things if o.kind == t.kind and o.colour == t.colour]
    same_kind = [o for o in things if o.kind == t.kind]
    if len(same_ck) > 1:
        groups.append((same_ck, _name(t)))
    if len(same_kind) > 1:
        groups.append((same_kind, t.kind))
    for group, np_ in groups:
        others = [o for o in group if o is not t]
        for axis, sign, phrasings in _SIDES.values():
            if all(_beyond(t, o, axis, sign, margins[axis]) for o in others):
                found.append(_pick(rng, phrasings).format(np=np_))
        if all(t.radius > SIZE_RATIO * o.radius for o in others):
            found.append(f"the {_pick(rng, ('big', 'large', 'biggest', 'largest'))} {np_}")
        if all(t.radius * SIZE_RATIO < o.radius for o in others):
            found.append(f"the {_pick(rng, ('small', 'little', 'smallest'))} {np_}")
        # A relation to an anchor named uniquely by colour and kind, outside the group.
        anchors = [a for a in things if a not in group and _unique(things, a, with_colour=True)]
        for anchor in anchors[:2]:
            for axis, sign, phrasings in _RELATIONS.values():
                if _beyond(t, anchor, axis, sign, margins[axis]) and all(
                        _beyond(anchor, o, axis, sign, margins[axis]) for o in others):
                    found.append(_pick(rng, phrasings).format(np=np_, anchor=_name(anchor)))
    found = list(dict.fromkeys(found))
    if len(found) > max_expressions:
        found = [found[i] for i in sorted(rng.choice(len(found), max_expressions, replace=False))]
    return found


# ----------------------------------------------------------------------------- captions
_EMPTY_CAPTIONS = ("an empty background", "there are no shapes in this image", "no objects, only a background",
                   "a background with nothing on it")


def _inventory(things: Sequence[Thing], with_colour: bool) -> List[str]:
    counts: Dict[str, int] = {}
    for t in things:
        counts[_name(t, with_colour)] = counts.get(_name(t, with_colour), 0) + 1
    return [count_phrase(c, n) for n, c in counts.items()]


def _relation_caption(things: Sequence[Thing], width: int, height: int, rng) -> str:
    """"a red star to the left of a blue circle" for two objects clearly apart, or ""."""
    order = [int(i) for i in rng.permutation(len(things))]
    for i in order:
        for j in order:
            a, b = things[i], things[j]
            if a is b:
                continue
            for relation, (axis, sign, _) in _RELATIONS.items():
                if _beyond(a, b, axis, sign, (POSITION_MARGIN * width, POSITION_MARGIN * height)[axis]):
                    words = {"left of": "to the left of", "right of": "to the right of"}.get(relation, relation)
                    return f"{count_phrase(1, _name(a))} {words} {count_phrase(1, _name(b))}"
    return ""


def captions(things: Sequence[Thing], width: int, height: int, rng: np.random.Generator) -> List[Tuple[str, str]]:
    """(caption, style) pairs in several styles: the full list by colour and kind (``objects``,
    always first), the list by kind (``kinds``), a count with a hypernym (``count``), the count
    followed by the full list (``count_objects``), a relation of two objects (``relation``). An
    empty image has two ``objects`` captions saying that nothing is there."""
    if not things:
        return [(str(c), "objects") for c in rng.choice(_EMPTY_CAPTIONS, 2, replace=False)]
    n = len(things)
    full = join(_inventory(things, True))
    hyper = _pick(rng, HYPERNYMS)
    result = [(full, "objects"),
              (_pick(rng, ("", "an image of ", "a picture with ")) + join(_inventory(things, False)), "kinds"),
              (count_phrase(n, _pick(rng, ("coloured ", "colorful ", "")) + hyper), "count"),
              (f"{count_phrase(n, hyper)}: {full}", "count_objects")]
    relation = _relation_caption(things, width, height, rng) if n >= 2 else ""
    if relation:
        result.append((relation, "relation"))
    return result


# ----------------------------------------------------------------------------- questions
_COUNT_KIND = ("how many {p} are there?", "how many {p} can you see?", "how many {p} are in the image?",
               "what is the number of {p}?", "count the {p}.")
_COUNT_COLOUR = ("how many {c} {h} are there?", "how many {c} {h} can you see?", "count the {c} {h}.")
_COUNT_ALL = ("how many {h} are there?", "how many {h} are in the picture?", "count the {h} in the image.")
_COLOUR_OF = ("what color is the {k}?", "what colour is the {k}?", "which color does the {k} have?",
              "the {k} is what color?")
_KIND_OF = ("what shape is the {c} {h}?", "what kind of shape is the {c} {h}?", "which shape is {c}?")
_PRESENCE = ("is there {a} {np}?", "is there {a} {np} in the image?", "do you see {a} {np}?",
             "can you find {a} {np}?", "are there any {pl}?")
_RELATION_YN = ("is the {a} to the left of the {b}?", "is the {a} left of the {b}?",
                "is the {a} on the left side of the {b}?")
_SIDE = ("is the {k} on the left or on the right?", "is the {k} on the left or the right side of the image?",
         "which side of the image is the {k} on, left or right?")


def _presence_question(things, rng, answer_yes: bool, colours: Sequence[str]):
    """A presence question about a colour and kind, a kind, or a colour and hypernym whose
    answer is ``answer_yes`` (about absent things for no), or None when there is none (yes on
    an empty image)."""
    forms = ((True, True), (False, True), (True, False))  # (names a colour, names a kind)
    for form in rng.permutation(len(forms)):
        with_colour, with_kind = forms[int(form)]
        if answer_yes:
            if not things:
                return None
            t = _pick(rng, things)
            colour, kind = t.colour, t.kind
        else:
            colour, kind = _pick(rng, colours), _pick(rng, KINDS)
        noun = kind if with_kind else _pick(rng, HYPERNYMS)
        np_ = f"{colour} {noun}" if with_colour else noun
        present = any((not with_colour or o.colour == colour) and (not with_kind or o.kind == kind) for o in things)
        if present == answer_yes:
            text = _pick(rng, _PRESENCE).format(a=article(np_), np=np_, pl=plural(np_))
            return text, "yes" if present else "no"
    return None


def questions(things: Sequence[Thing], width: int, height: int, rng: np.random.Generator,
              colours: Sequence[str]) -> List[Tuple[str, str, str]]:
    """(question, answer, answer_type) triples: counts (by kind, colour, all), colour of a kind,
    kind of a colour, side, relation (yes/no), presence (yes/no, about present and absent
    things). ``colours`` are the nameable colours (absent ones are asked about too)."""
    qa = []
    kind = _pick(rng, KINDS)
    qa.append((_pick(rng, _COUNT_KIND).format(p=plural(kind)), str(sum(t.kind == kind for t in things)), "number"))
    if rng.random() < 0.5:
        colour = _pick(rng, colours)
        qa.append((_pick(rng, _COUNT_COLOUR).format(c=colour, h=plural(_pick(rng, HYPERNYMS))),
                   str(sum(t.colour == colour for t in things)), "number"))
    else:
        qa.append((_pick(rng, _COUNT_ALL).format(h=plural(_pick(rng, HYPERNYMS))), str(len(things)), "number"))
    unique_kind = [t for t in things if _unique(things, t, with_colour=False)]
    unique_colour = [t for t in things if sum(o.colour == t.colour for o in things) == 1]
    if unique_kind and (rng.random() < 0.5 or not unique_colour):
        t = _pick(rng, unique_kind)
        qa.append((_pick(rng, _COLOUR_OF).format(k=t.kind), t.colour, "other"))
    elif unique_colour:
        t = _pick(rng, unique_colour)
        qa.append((_pick(rng, _KIND_OF).format(c=t.colour, h=_pick(rng, HYPERNYMS)), t.kind, "other"))
    if unique_kind:
        t = _pick(rng, unique_kind)
        if abs(t.cx / width - 0.5) > 0.1:
            qa.append((_pick(rng, _SIDE).format(k=t.kind), "left" if t.cx < width / 2 else "right", "other"))
    # Relation yes/no: two objects named uniquely by colour and kind, clearly apart in x.
    named = [t for t in things if _unique(things, t, with_colour=True)]
    pairs = [(a, b) for a in named for b in named if a.cx + POSITION_MARGIN * width < b.cx]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]  # a is left of b
        if rng.random() >= 0.5:
            a, b = b, a  # asked the other way round, the answer is no
        answer = "yes" if a.cx < b.cx else "no"
        qa.append((_pick(rng, _RELATION_YN).format(a=_name(a), b=_name(b)), answer, "yes/no"))
    for _ in range(2):
        presence = _presence_question(things, rng, bool(rng.random() < 0.5), colours)
        if presence is not None:
            qa.append((presence[0], presence[1], "yes/no"))
    return qa
