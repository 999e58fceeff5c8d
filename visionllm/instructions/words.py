"""The words of an instruction and the short phrases that end at each of them.

A phrase of a word is the word with up to ``window - 1`` words before it ("the red square" for
"square"): in English the head noun of a description comes last, so the phrase ending at a noun
holds the words that pick its object out. Placeholders (``<image>``, ``<region>``) are not words.
"""
import re
from typing import List, Tuple

from .regions import PLACEHOLDER_PATTERN

_WORD = re.compile(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*")


def word_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text``, placeholders left out."""
    blanked = PLACEHOLDER_PATTERN.sub(lambda m: " " * len(m.group()), text)
    return [m.span() for m in _WORD.finditer(blanked)]


def word_phrases(text: str, window: int = 3) -> List[str]:
    """Per word of ``text`` (``word_spans``), the phrase of up to ``window`` words ending at it."""
    if window < 1:
        raise ValueError(f"a phrase window must hold at least one word, got {window}")
    words = [text[a:b] for a, b in word_spans(text)]
    return [" ".join(words[max(0, i - window + 1):i + 1]) for i in range(len(words))]
