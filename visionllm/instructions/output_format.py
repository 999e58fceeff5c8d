"""Output formats: the field list an instruction asks for, and the parser that reads it.

The instruction spells the format it wants, e.g. ``(c, x1, y1, x2, y2)`` for a box or
``(c, x1, y1, ..., x16, y16)`` for a 16-point polygon. The decoder turns each field into a
query token, so the format must be read from the text deterministically; ``parse_output_format``
does that for our templates and for hand-written phrasings.

What is supported (and why):

* a class field named ``c``, ``cls``, ``class``, ``category`` or ``label``; when absent it is
  still added, because every slot decodes its class (object / no-object and the score live
  there), so ``(x1, y1, x2, y2)`` means the same as ``(c, x1, y1, x2, y2)``;
* numbered corner / vertex coordinates ``x1, y1, ..., xK, yK`` (also ``x_1``), written out or
  with an ellipsis (``...`` or ``…``); K = 2 is a box (two corners), 3 <= K <= 24 a polygon.
  The fields are returned in canonical order ``cls, x1, y1, ..., xK, yK``;
* the decoder's own format tokens, ``<cls> <x1> <y1> <x2> <y2>``.

Rejected with ``UnsupportedOutputFormat`` (the model has no field tokens for them):
more than ``MAX_POINTS`` points, a single point, ``(x, y, w, h)`` / ``(cx, cy, w, h)`` boxes,
unknown fields, and text without any format.
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

# The decoder has field tokens <x1>, <y1> ... <x24>, <y24> (SpecialTokens.max_points).
MAX_POINTS = 24
MIN_POLYGON_POINTS = 3

CLASS_FIELD = "cls"
_CLASS_ALIASES = {"c", "cls", "class", "category", "label", "cat", "<cls>"}
_ELLIPSIS = {"...", "…", "..", "....", "etc", "etc."}
_WIDTH_HEIGHT = {"w", "h", "width", "height"}
_CENTRE = {"cx", "cy", "xc", "yc", "x_c", "y_c"}
_COORDINATE = re.compile(r"^<?([xy])\s*_?\s*(\d+)>?$")


class UnsupportedOutputFormat(ValueError):
    """The instruction asks for an output the decoder cannot produce (one-line message)."""


@dataclass(frozen=True)
class OutputFormat:
    """The fields of one structured output, e.g. ``('cls', 'x1', 'y1', 'x2', 'y2')``."""

    fields: Tuple[str, ...]

    def __post_init__(self):
        fields = tuple(self.fields)
        object.__setattr__(self, "fields", fields)
        if not fields or fields[0] != CLASS_FIELD:
            raise ValueError(f"an output format starts with '{CLASS_FIELD}', got {fields}")
        num_points = (len(fields) - 1) // 2
        expected = (CLASS_FIELD,) + _coordinate_fields(num_points)
        if fields != expected or not (2 <= num_points <= MAX_POINTS):
            raise ValueError(f"fields must be cls, x1, y1, ..., xK, yK with 2 <= K <= {MAX_POINTS}, "
                             f"got {fields}")

    @classmethod
    def box(cls) -> "OutputFormat":
        return cls((CLASS_FIELD,) + _coordinate_fields(2))

    @classmethod
    def polygon(cls, num_points: int) -> "OutputFormat":
        if not MIN_POLYGON_POINTS <= num_points <= MAX_POINTS:
            raise UnsupportedOutputFormat(
                f"polygons need {MIN_POLYGON_POINTS}..{MAX_POINTS} points, got {num_points}")
        return cls((CLASS_FIELD,) + _coordinate_fields(num_points))

    @property
    def num_points(self) -> int:
        return (len(self.fields) - 1) // 2

    @property
    def kind(self) -> str:
        """``'box'`` for two corners, ``'polygon'`` for K >= 3 vertices."""
        return "box" if self.num_points == 2 else "polygon"

    @property
    def coordinate_fields(self) -> Tuple[str, ...]:
        return self.fields[1:]

    def to_text(self) -> str:
        """How templates spell the format: written out for boxes, with an ellipsis for polygons."""
        if self.kind == "box":
            return "(c, x1, y1, x2, y2)"
        k = self.num_points
        return f"(c, x1, y1, ..., x{k}, y{k})"

    def __str__(self) -> str:
        return self.to_text()


def _coordinate_fields(num_points: int) -> Tuple[str, ...]:
    return tuple(f"{axis}{i}" for i in range(1, num_points + 1) for axis in "xy")


_PARENTHESISED = re.compile(r"[(\[]([^()\[\]]*)[)\]]")
_FORMAT_TOKEN_RUN = re.compile(r"(?:<(?:cls|[xy]\d+)>\s*){2,}")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _looks_like_format(items: List[str]) -> bool:
    """A parenthesised group is a format candidate when it names coordinates (and nothing but
    field-like words), so prose in parentheses, e.g. ``(left)``, is skipped."""
    fieldish = 0
    for item in items:
        if item in _CLASS_ALIASES or item in _ELLIPSIS:
            continue
        if _COORDINATE.match(item) or item in ("x", "y") or item in _WIDTH_HEIGHT or item in _CENTRE:
            fieldish += 1
            continue
        return False
    return fieldish > 0


def _split_items(group: str) -> List[str]:
    if "," in group:
        parts = group.split(",")
    else:
        parts = group.split()
    items = []
    for part in parts:
        # Whitespace inside a comma item ("x1 y1") is a separator too.
        items.extend(word.strip("'\"`").lower() for word in part.split())
    return [item for item in items if item]


def _find_candidates(text: str) -> List[List[str]]:
    """Every format-like group of ``text``, in order of position."""
    candidates = []
    for match in _FORMAT_TOKEN_RUN.finditer(text):
        candidates.append((match.start(), re.findall(r"<([^<>]+)>", match.group(0))))
    for match in _PARENTHESISED.finditer(text):
        items = _split_items(match.group(1))
        if items and _looks_like_format(items):
            candidates.append((match.start(), items))
    return [items for _, items in sorted(candidates, key=lambda c: c[0])]


def _points_from_items(items: List[str], source: str) -> int:
    """Validate the coordinate items and return the number of points K they describe."""
    coords = [item for item in items if item not in _CLASS_ALIASES]
    if len(items) - len(coords) > 1:
        raise UnsupportedOutputFormat(f"format {source} names the class more than once")
    if any(item in _CENTRE for item in coords):
        raise UnsupportedOutputFormat(
            f"centre-based format {source} is not supported; use (c, x1, y1, x2, y2)")
    if any(item in ("x", "y") for item in coords) or any(item in _WIDTH_HEIGHT for item in coords):
        raise UnsupportedOutputFormat(
            f"width/height format {source} is not supported; use (c, x1, y1, x2, y2)")
    # Split at the (single) ellipsis: the head must start at point 1, the tail ends at point K.
    gaps = [i for i, item in enumerate(coords) if item in _ELLIPSIS]
    if len(gaps) > 1:
        raise UnsupportedOutputFormat(f"format {source} has more than one ellipsis")
    parsed: List[Tuple[str, int]] = []
    for item in coords:
        if item in _ELLIPSIS:
            parsed.append(("...", 0))
            continue
        m = _COORDINATE.match(item)
        if m is None:
            raise UnsupportedOutputFormat(f"unknown field '{item}' in format {source}")
        parsed.append((m.group(1), int(m.group(2))))
    head = parsed[:gaps[0]] if gaps else parsed
    tail = parsed[gaps[0] + 1:] if gaps else []
    if not head:
        raise UnsupportedOutputFormat(f"format {source} names no coordinates before its ellipsis")

    def check_run(run, first_point):  # x_j, y_j, x_j+1, y_j+1, ... from j = first_point
        expected = [(axis, first_point + j) for j in range(len(run) // 2) for axis in "xy"]
        return len(run) % 2 == 0 and run == expected

    if not check_run(head, 1):
        raise UnsupportedOutputFormat(
            f"coordinates in {source} must run x1, y1, x2, y2, ... in order")
    if not tail:
        if gaps:
            raise UnsupportedOutputFormat(f"format {source} ends with an ellipsis; name the last point")
        num_points = len(head) // 2
    else:
        num_points = tail[-1][1]
        first_tail_point = num_points - len(tail) // 2 + 1
        if len(tail) % 2 or not check_run(tail, first_tail_point) or first_tail_point <= len(head) // 2:
            raise UnsupportedOutputFormat(
                f"coordinates in {source} must run x1, y1, ..., xK, yK in order")
    return num_points


_NUM_POINTS_PHRASE = re.compile(r"\b(\d+)[\s-]*(?:points?|vertices|vertex|corners)\b", re.IGNORECASE)


def parse_output_format(text: str) -> OutputFormat:
    """Read the output format an instruction asks for (see the module docstring).

    Quoted strings (category names, referring expressions) are ignored first, so a name that
    happens to contain parentheses cannot be taken for the format; if nothing is found outside
    quotes the whole text is searched, for users who quote the format itself.
    """
    unquoted = _QUOTED.sub('""', text)
    candidates = _find_candidates(unquoted) or _find_candidates(text)
    if not candidates:
        snippet = text if len(text) <= 60 else text[:57] + "..."
        raise UnsupportedOutputFormat(f"no output format such as (c, x1, y1, x2, y2) found in {snippet!r}")
    # The format is conventionally stated last ("... Answer as (c, x1, y1, x2, y2).").
    items = candidates[-1]
    source = "(" + ", ".join(items) + ")"
    num_points = _points_from_items(items, source)
    if num_points > MAX_POINTS:
        raise UnsupportedOutputFormat(f"{num_points} points requested in {source}; at most {MAX_POINTS} are supported")
    if num_points < 2:
        raise UnsupportedOutputFormat(f"a single point {source} is not a supported output; use a box or polygon")
    # A stated count ("polygon with 8 points") must agree with the tuple; other numbers in
    # the prose ("the 3 corners of the table") are tolerated as long as one count agrees.
    stated = [int(m.group(1)) for m in _NUM_POINTS_PHRASE.finditer(unquoted)]
    if stated and num_points > 2 and num_points not in stated:
        raise UnsupportedOutputFormat(
            f"text says {stated[0]} points but the format {source} has {num_points}")
    return OutputFormat.box() if num_points == 2 else OutputFormat.polygon(num_points)


def find_output_format(text: str) -> Optional[OutputFormat]:
    """Like :func:`parse_output_format`, but ``None`` when the text asks for no structured output
    at all (captions, questions); a format that is present but unsupported still raises."""
    if not (_find_candidates(_QUOTED.sub('""', text)) or _find_candidates(text)):
        return None
    return parse_output_format(text)
