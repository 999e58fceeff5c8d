"""Object mentions in captions, checked against the objects of the image: CHAIR and count accuracy.

CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018) counts the
object words of generated captions that name no object of the image:

- ``CHAIR_i``: hallucinated mentions / all object mentions (every occurrence counts, so a
  caption that names the same absent object twice has two hallucinated mentions);
- ``CHAIR_s``: captions with at least one hallucinated mention / all captions.

Added here, for captions that state how many there are ("two red squares", "3 dogs"):

- ``count accuracy``: stated counts that equal the number of matching objects / stated counts;
- ``repeat share``: captions naming the same object phrase (category and attribute) more than
  once ("a purple triangle, a purple triangle"), a symptom of degenerate decoding.

The vocabulary comes from the dataset: the category names of a COCO instances file (singular and
plural, multi-word names such as "traffic light", plus synonyms), and optionally attribute words
read from the annotations (e.g. the shapes data's ``attributes.colour``), so that "red square"
is a mention of a square that must be red. Generic nouns ("shape", "object", "thing") name no
category: they are not CHAIR mentions, but a count on them ("three shapes", "two red objects")
is checked against all objects (of that attribute).

Limits, as in CHAIR: negations ("no dog") and quantities other than numerals are not read; "a"
is not a stated count.
"""
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

from visionllm.utils.english import plural


GENERIC_WORDS = ("shape", "object", "thing", "item")
NUMBER_WORDS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
# Words that end the modifiers in front of a noun ("the", "and", ...): a numeral or attribute
# further left belongs to another phrase.
PHRASE_BOUNDARIES = frozenset(
    "a an the and or of to with on in at by near next from under over above below behind beside between "
    "is are there this that these those its their his her".split())
MAX_MODIFIERS = 3  # words looked at in front of a noun for its numeral and attribute
# A few common names of the 80 COCO categories (extend through ``synonyms=``).
COCO_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "person": ("man", "woman", "boy", "girl", "child", "kid", "people", "player", "guy", "lady", "baby"),
    "bicycle": ("bike",), "motorcycle": ("motorbike",), "airplane": ("plane", "aeroplane", "jet", "aircraft"),
    "car": ("taxi",), "tv": ("television",), "couch": ("sofa",), "dining table": ("table",),
    "cell phone": ("phone", "cellphone", "mobile phone"), "laptop": ("notebook computer",),
    "sports ball": ("ball", "football", "soccer ball", "baseball", "tennis ball"),
    "donut": ("doughnut",), "hot dog": ("hotdog",), "potted plant": ("houseplant", "plant"),
    "teddy bear": ("teddy",), "wine glass": ("wineglass",), "hair drier": ("hair dryer", "hairdryer"),
    "bus": ("coach",), "mouse": ("computer mouse",), "remote": ("remote control",),
}


def words(text: str) -> List[str]:
    """Lower-case words, numerals and single punctuation marks of ``text``, in order."""
    return re.findall(r"[a-z]+|\d+|[^\sa-z\d]", text.lower())


@dataclass(frozen=True)
class Mention:
    """One object phrase of a caption: ``category`` (None for a generic noun such as "shape"),
    the ``attribute`` word in front of it (or None), the stated ``count`` (or None), the word
    position ``start`` and the matched words ``text``."""
    category: Optional[str]
    attribute: Optional[str]
    count: Optional[int]
    start: int
    text: str


class ObjectVocabulary:
    """The object words of a dataset: category names, their plurals and synonyms, attribute words
    and generic nouns.

    Args:
        categories: category names (e.g. the ``name`` of every COCO category).
        attributes: attribute words that may qualify a noun (e.g. colour names), or none.
        synonyms: ``{category: [other names]}`` (their plurals are added too).
        generic_words: nouns that name no category ("shape", "object", ...).
    """

    def __init__(self, categories: Iterable[str], attributes: Iterable[str] = (),
                 synonyms: Optional[Mapping[str, Sequence[str]]] = None,
                 generic_words: Iterable[str] = GENERIC_WORDS):
        self.categories = tuple(dict.fromkeys(str(c).lower().strip() for c in categories))
        if not self.categories:
            raise ValueError("ObjectVocabulary needs at least one category name")
        self.attributes = frozenset(str(a).lower().strip() for a in attributes)
        self.phrases: Dict[Tuple[str, ...], Optional[str]] = {}
        # First come first kept: category names, then synonyms, then generic nouns, so that a
        # synonym never shadows a category's own name.
        for category in self.categories:
            self._add(category, category)
        for category in self.categories:
            for name in (synonyms or {}).get(category, ()):
                self._add(name, category)
        for word in generic_words:
            self._add(word, None)
        self.longest = max(len(p) for p in self.phrases)

    def _add(self, name: str, category: Optional[str]) -> None:
        for form in (name, plural(name)):
            key = tuple(words(form))
            if key:
                self.phrases.setdefault(key, category)

    @classmethod
    def from_coco(cls, instances: dict, attribute_keys: Sequence[str] = (), **kwargs) -> "ObjectVocabulary":
        """Categories of a COCO instances dict; attribute words are the values of
        ``annotation['attributes'][key]`` for ``key`` in ``attribute_keys``."""
        names = [c["name"] for c in instances.get("categories", [])]
        attributes = {str(value) for ann in instances.get("annotations", [])
                      for key, value in (ann.get("attributes") or {}).items() if key in attribute_keys}
        return cls(names, attributes, **kwargs)

    def _match(self, tokens: List[str], i: int) -> Tuple[int, Optional[str]]:
        """Length and category of the longest phrase starting at ``tokens[i]`` (0 when none)."""
        for length in range(min(self.longest, len(tokens) - i), 0, -1):
            key = tuple(tokens[i:i + length])
            if key in self.phrases:
                return length, self.phrases[key]
        return 0, None

    def mentions(self, caption: str) -> List[Mention]:
        """The object phrases of ``caption`` left to right (longest names first: "hot dog" is one
        mention of "hot dog", not of "dog"). An attribute word directly before another object
        word qualifies it ("orange square" is a square even when "orange" is also a category)."""
        tokens = words(caption)
        found, i = [], 0
        while i < len(tokens):
            length, category = self._match(tokens, i)
            if length and tokens[i] in self.attributes and length == 1 and self._match(tokens, i + 1)[0]:
                length = 0  # an attribute in front of a noun, not a noun itself
            if not length:
                i += 1
                continue
            attribute, count = None, None
            for j in range(i - 1, max(-1, i - 1 - MAX_MODIFIERS), -1):
                token = tokens[j]
                if token in NUMBER_WORDS or token.isdigit():
                    count = NUMBER_WORDS.get(token, int(token) if token.isdigit() else None)
                    break
                if token in PHRASE_BOUNDARIES or not token.isalpha() or self._match(tokens, j)[0] and \
                        token not in self.attributes:
                    break
                if token in self.attributes and attribute is None:
                    attribute = token
            found.append(Mention(category, attribute, count, i, " ".join(tokens[i:i + length])))
            i += length
        return found


ImageObjects = List[Tuple[str, Optional[str]]]  # (category name, attribute word or None) per object


def load_image_objects(instances, attribute_keys: Sequence[str] = ()) -> Tuple[dict, Dict[Hashable, ImageObjects]]:
    """The instances dict (read from a path or merged from a list of paths) and, per image id of
    its ``images``, the ``(category name, attribute)`` of each annotated object (an image without
    annotations has an empty list; crowd regions are left out)."""
    paths = [instances] if isinstance(instances, (str, dict)) else list(instances)
    merged = dict(images=[], annotations=[], categories=[])
    for item in paths:
        if isinstance(item, str):
            with open(item) as handle:
                data = json.load(handle)
        else:
            data = item
        for key in merged:
            merged[key].extend(data.get(key, []))
    names = {c["id"]: str(c["name"]).lower() for c in merged["categories"]}
    objects: Dict[Hashable, ImageObjects] = {img["id"]: [] for img in merged["images"]}
    for ann in merged["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("category_id") not in names:
            continue
        attrs = ann.get("attributes") or {}
        attribute = next((str(attrs[k]).lower() for k in attribute_keys if k in attrs), None)
        objects.setdefault(ann["image_id"], []).append((names[ann["category_id"]], attribute))
    return merged, objects


def matching(objects: ImageObjects, category: Optional[str], attribute: Optional[str]) -> int:
    """Objects of ``category`` (any when None) with ``attribute`` (any when None)."""
    return sum((category is None or c == category) and (attribute is None or a == attribute) for c, a in objects)


@dataclass
class HallucinationScores:
    """Fractions (None where nothing was there to score) and the counts they come from."""
    chair_i: Optional[float]
    chair_s: Optional[float]
    count_accuracy: Optional[float]
    repeat_share: Optional[float]
    num_captions: int
    num_mentions: int
    num_counts: int


def hallucination_scores(captions: Mapping[Hashable, str], objects: Mapping[Hashable, ImageObjects],
                         vocabulary: ObjectVocabulary) -> HallucinationScores:
    """CHAIR_i / CHAIR_s, count accuracy and repeat share of ``captions`` (``{image id: text}``)
    against ``objects`` (``{image id: [(category, attribute)]}``); images without an entry in
    ``objects`` are left out."""
    mentions = hallucinated = bad_captions = counts = right_counts = repeating = scored = 0
    for image_id, caption in captions.items():
        if image_id not in objects:
            continue
        scored += 1
        present = objects[image_id]
        found = vocabulary.mentions(caption)
        named = [m for m in found if m.category is not None]
        wrong = sum(matching(present, m.category, m.attribute) == 0 for m in named)
        mentions += len(named)
        hallucinated += wrong
        bad_captions += wrong > 0
        repeating += any(n > 1 for n in Counter((m.category, m.attribute) for m in named).values())
        for m in found:
            if m.count is not None:
                counts += 1
                right_counts += matching(present, m.category, m.attribute) == m.count
    return HallucinationScores(
        chair_i=hallucinated / mentions if mentions else None,
        chair_s=bad_captions / scored if scored else None,
        count_accuracy=right_counts / counts if counts else None,
        repeat_share=repeating / scored if scored else None,
        num_captions=scored, num_mentions=mentions, num_counts=counts)
