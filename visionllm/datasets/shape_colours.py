"""Continuous object colours and the table that names them (the *varied* shapes style).

An object's colour is drawn anywhere in RGB and named by the nearest entry of
``COLOUR_NAMES`` (plain English words a small language model can say). A draw is kept only
when its name is clear: it lies within ``MAX_NAME_DISTANCE`` of its nearest entry and at least
``NAME_MARGIN`` closer to it than to the second nearest, so no drawn colour sits on the border
between two names.

Held-out colour ranges: RGB space is cut into cubes of ``CELL`` levels per channel and every
cube whose index sum is a multiple of ``HELDOUT_EVERY`` is held out. Training draws never fall
in a held-out cube; a held-out split draws only from them, so its colours are shades training
never saw (under the same names).
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

RGB = Tuple[int, int, int]

COLOUR_NAMES: Dict[str, RGB] = {
    "red": (210, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (135, 55, 190),
    "orange": (245, 135, 25),
    "pink": (245, 130, 190),
    "brown": (125, 70, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
MAX_NAME_DISTANCE = 60.0
NAME_MARGIN = 25.0
CELL = 16
HELDOUT_EVERY = 4

_NAMES = list(COLOUR_NAMES)
_PALETTE = np.asarray([COLOUR_NAMES[n] for n in _NAMES], dtype=np.float64)


def nearest_colour_name(rgb) -> Tuple[str, float, float]:
    """(name of the nearest table colour, its distance, distance to the second nearest)."""
    distance = np.linalg.norm(_PALETTE - np.asarray(rgb, dtype=np.float64), axis=1)
    first, second = np.argsort(distance)[:2]
    return _NAMES[first], float(distance[first]), float(distance[second])


def is_heldout_colour(rgb) -> bool:
    """Whether ``rgb`` lies in a held-out colour cube."""
    return int(sum(int(v) // CELL for v in rgb)) % HELDOUT_EVERY == 0


def clearly_named(rgb) -> Optional[str]:
    """The colour's name when it is unambiguous (see the module doc), else None."""
    name, d1, d2 = nearest_colour_name(rgb)
    if d1 > MAX_NAME_DISTANCE or d2 - d1 < NAME_MARGIN:
        return None
    return name


def draw_colour(rng: np.random.Generator, heldout: bool, name: Optional[str] = None,
                avoid: Sequence = (), min_contrast: float = 70.0, tries: int = 400) -> Optional[Tuple[str, RGB]]:
    """(name, rgb) of a clearly named colour from the training (``heldout=False``) or the held-out cubes.

    ``name`` restricts the draw to one table name; ``avoid`` (RGB colours: the background under
    the object, the objects it touches) rejects colours closer than ``min_contrast`` to any.
    None when ``tries`` draws found none.
    """
    names = [name] if name is not None else _NAMES
    for _ in range(tries):
        centre = np.asarray(COLOUR_NAMES[names[int(rng.integers(len(names)))]], dtype=np.float64)
        rgb = tuple(int(v) for v in np.clip(np.round(centre + rng.uniform(-55, 55, 3)), 0, 255))
        if is_heldout_colour(rgb) != heldout:
            continue
        got = clearly_named(rgb)
        if got is None or (name is not None and got != name):
            continue
        if any(np.linalg.norm(np.asarray(rgb, np.float64) - np.asarray(a, np.float64)) < min_contrast
               for a in avoid):
            continue
        return got, rgb
    return None  # the constraints leave (almost) no colour: the caller places something else
