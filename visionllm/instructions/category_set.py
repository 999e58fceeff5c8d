"""Category sets: the open list of class names an instruction carries.

Class tokens carry no meaning of their own: ``<ci>`` is "the i-th name of this instruction".
Training therefore shuffles and subsamples each image's set and mixes in absent names
(negatives), so the model must read the names instead of memorising a label order.
"""
import json
import math
import random
import re
from typing import List, Sequence

IMAGE_PLACEHOLDER = "<image>"


def class_token(index: int) -> str:
    return f"<c{index}>"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"category names are non-empty strings, got {name!r}")
    if IMAGE_PLACEHOLDER in name:
        raise ValueError(f"a category name may not contain {IMAGE_PLACEHOLDER}: {name!r}")


def format_category_set(names: Sequence[str]) -> str:
    """``['cat', 'dog']`` → ``{"cat": <c0>, "dog": <c1>}`` (names JSON-quoted, so quotes and
    backslashes inside a name stay unambiguous)."""
    for name in names:
        _check_name(name)
    entries = [f"{json.dumps(name, ensure_ascii=False)}: {class_token(i)}" for i, name in enumerate(names)]
    return "{" + ", ".join(entries) + "}"


_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_ENTRY = rf'({_JSON_STRING})\s*:\s*<c(\d+)>'
_CATEGORY_SET = re.compile(rf'\{{\s*(?:{_JSON_STRING}\s*:\s*<c\d+>\s*,\s*)*{_JSON_STRING}\s*:\s*<c\d+>\s*\}}')


def read_category_set(text: str) -> List[str]:
    """Inverse of :func:`format_category_set`: the names of the first category set in ``text``
    in class-token order (``[]`` when there is none). Raises ``ValueError`` when the class
    tokens are not ``<c0>, <c1>, ...`` in order."""
    match = _CATEGORY_SET.search(text)
    if match is None:
        return []
    names = []
    for i, (quoted, index) in enumerate(re.findall(_ENTRY, match.group(0))):
        if int(index) != i:
            raise ValueError(f"category set tokens must run <c0>, <c1>, ... in order; entry {i} is <c{index}>")
        names.append(json.loads(quoted))
    return names


def _unique(names: Sequence[str]) -> List[str]:
    return list(dict.fromkeys(names))


def sample_category_set(positives: Sequence[str], all_names: Sequence[str], rng: random.Random,
                        max_categories: int = 512, negative_ratio: float = 1.0) -> List[str]:
    """Draw the category set of one training instruction.

    Args:
        positives: names of the categories present in the image (duplicates ignored).
        all_names: every category name of the dataset; negatives are drawn from those not in
            ``positives``.
        rng: the only source of randomness, so a seeded rng reproduces the set.
        max_categories: budget, normally the number of class tokens.
        negative_ratio: negatives per kept positive; the count is
            ``round(negative_ratio * kept_positives)`` but at least 1 when the ratio is positive
            (an image without positives still gets a set), and never beyond the budget or the
            names available.

    Returns:
        Positives (all of them when they fit the budget, else a random ``max_categories``
        subset) plus negatives, in random order.
    """
    if max_categories < 1:
        raise ValueError(f"max_categories must be >= 1, got {max_categories}")
    if negative_ratio < 0:
        raise ValueError(f"negative_ratio must be >= 0, got {negative_ratio}")
    positives = _unique(positives)
    for name in positives:
        _check_name(name)
    kept = rng.sample(positives, max_categories) if len(positives) > max_categories else list(positives)

    positive_set = set(positives)
    pool = [name for name in _unique(all_names) if name not in positive_set]
    num_negatives = 0
    if negative_ratio > 0:
        num_negatives = max(1, int(math.floor(negative_ratio * len(kept) + 0.5)))
    num_negatives = min(num_negatives, max_categories - len(kept), len(pool))
    negatives = rng.sample(pool, num_negatives)

    chosen = kept + negatives
    rng.shuffle(chosen)
    return chosen


def split_category_set(names: Sequence[str], max_per_pass: int = 512) -> List[List[str]]:
    """Split a category list larger than the class-token budget into consecutive chunks, one
    per decoding pass; concatenating the chunks gives ``names`` back, so a pass's local label
    i maps to global index ``pass_index * max_per_pass + i``."""
    if max_per_pass < 1:
        raise ValueError(f"max_per_pass must be >= 1, got {max_per_pass}")
    names = list(names)
    return [names[start:start + max_per_pass] for start in range(0, len(names), max_per_pass)]
