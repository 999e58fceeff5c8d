"""Words of direction that trade places when the image is mirrored.

A horizontal flip turns "left" into "right"; a vertical one turns "above" into "below". The
training flip rewrites the text with ``swap_left_right``; ``RegionRelations`` reads which way an
instruction asks by comparing it with its swapped forms.
"""
import re
from typing import Callable, Dict


def _swapper(pairs: Dict[str, str]) -> Callable[[str], str]:
    words = {**pairs, **{b: a for a, b in pairs.items()}}
    pattern = re.compile(r"\b(" + "|".join(sorted(words, key=len, reverse=True)) + r")\b", re.IGNORECASE)

    def swap(text: str) -> str:
        def repl(match):
            word = match.group(0)
            swapped = words[word.lower()]
            if word.isupper():
                return swapped.upper()
            if word[0].isupper():
                return swapped.capitalize()
            return swapped
        return pattern.sub(repl, text)
    return swap


_swap_x = _swapper({"left": "right", "leftmost": "rightmost", "lefthand": "righthand"})
_swap_y = _swapper({"above": "below", "over": "under", "top": "bottom", "topmost": "bottommost", "upper": "lower",
                    "uppermost": "lowermost"})


def swap_left_right(text: str) -> str:
    """Swap "left" and "right" (and -most forms) as whole words, keeping their capitalisation."""
    return _swap_x(text)


def swap_top_bottom(text: str) -> str:
    """Swap above / below, over / under, top / bottom, upper / lower (and -most forms) as whole
    words, keeping their capitalisation."""
    return _swap_y(text)
