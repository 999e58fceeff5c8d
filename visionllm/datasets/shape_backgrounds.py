"""Backgrounds of the *varied* shapes style, one function per kind.

Every background is built from muted tones (low saturation, mid brightness, at least
``BACKGROUND_NAME_DISTANCE`` from every named colour) so that the named object colours stand out; each object's colour is further drawn away from the background under
it (``shape_colours.draw_colour(avoid=...)``).

``TRAIN_BACKGROUNDS`` and ``HELDOUT_BACKGROUNDS`` share no kind: a held-out split shows
backgrounds training never saw.

The clutter kind scatters small distractors that are *not* annotated: 1-pixel lines and dots
at most 3 pixels across, in background tones. They cannot be read as one of the annotated
kinds: every annotated object is at least ``MIN_OBJECT_DIAMETER`` pixels across, a filled
polygon, and drawn in a saturated or black/white colour.
"""
import math
from typing import Callable, Dict

import numpy as np

from .shape_colours import COLOUR_NAMES

MIN_OBJECT_DIAMETER = 10  # the varied generator never draws a smaller object (pixels)
MAX_DISTRACTOR_EXTENT = 3  # dots; lines are 1 pixel wide
BACKGROUND_NAME_DISTANCE = 80.0
_TABLE = np.asarray(list(COLOUR_NAMES.values()), dtype=np.float64)


def _base(rng: np.random.Generator) -> np.ndarray:
    """A muted RGB tone (grey with a small tint) at least ``BACKGROUND_NAME_DISTANCE`` from every
    table colour, so no background pixel reads as a named object colour."""
    while True:
        tone = rng.uniform(75, 175) + rng.uniform(-18, 18, size=3)
        if np.linalg.norm(_TABLE - tone, axis=1).min() >= BACKGROUND_NAME_DISTANCE:
            return tone.astype(np.float32)


def _grid(height: int, width: int):
    return np.mgrid[0:height, 0:width].astype(np.float32)


def flat(rng, height, width):
    return np.broadcast_to(_base(rng), (height, width, 3)).copy()


def gradient(rng, height, width):
    yy, xx = _grid(height, width)
    angle = rng.uniform(0, 2 * math.pi)
    t = (math.cos(angle) * xx / width + math.sin(angle) * yy / height)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    a, b = _base(rng), _base(rng)
    return a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]


def stripes(rng, height, width):
    yy, xx = _grid(height, width)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(5, 24)
    wave = np.sin(2 * math.pi * (math.cos(angle) * xx + math.sin(angle) * yy) / period)
    return _base(rng)[None, None] + rng.uniform(8, 22) * wave[..., None]


def checker(rng, height, width):
    yy, xx = _grid(height, width)
    cell = int(rng.integers(5, 20))
    sign = (((xx // cell) + (yy // cell)) % 2 * 2 - 1)
    return _base(rng)[None, None] + rng.uniform(8, 20) * sign[..., None]


def noise(rng, height, width):
    return flat(rng, height, width) + rng.normal(0, rng.uniform(6, 14), size=(height, width, 3))


def clutter(rng, height, width):
    """A flat or gradient base with 10..60 one-pixel lines and tiny dots in background tones."""
    img = flat(rng, height, width) if rng.random() < 0.5 else gradient(rng, height, width)
    for _ in range(int(rng.integers(10, 61))):
        tone = _base(rng)
        if rng.random() < 0.5:  # a short 1-pixel line
            length = rng.uniform(4, 14)
            angle = rng.uniform(0, 2 * math.pi)
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            steps = np.linspace(0, length, int(length) * 2 + 1)
            xs = np.clip((x0 + steps * math.cos(angle)).astype(int), 0, width - 1)
            ys = np.clip((y0 + steps * math.sin(angle)).astype(int), 0, height - 1)
            img[ys, xs] = tone
        else:  # a dot of 1..3 pixels across
            size = int(rng.integers(1, MAX_DISTRACTOR_EXTENT + 1))
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            img[y0:y0 + size, x0:x0 + size] = tone
    return img


def radial(rng, height, width):
    yy, xx = _grid(height, width)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    r = np.hypot(xx - cx, yy - cy)
    t = (r / max(float(r.max()), 1e-6))[..., None]
    a, b = _base(rng), _base(rng)
    return a[None, None] * (1 - t) + b[None, None] * t


def blotches(rng, height, width):
    """Smooth low-frequency noise: a coarse random grid upsampled bilinearly."""
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    coarse = rng.uniform(-25, 25, size=(gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 1, height)
    xs = np.linspace(0, gw - 1, width)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    smooth = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0][:, x1] * (1 - fy) * fx
              + coarse[y1][:, x0] * fy * (1 - fx) + coarse[y1][:, x1] * fy * fx)
    return _base(rng)[None, None] + smooth[..., None]


def waves(rng, height, width):
    yy, xx = _grid(height, width)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    period = rng.uniform(8, 30)
    wave = np.sin(2 * math.pi * np.hypot(xx - cx, yy - cy) / period)
    return _base(rng)[None, None] + rng.uniform(8, 20) * wave[..., None]


BACKGROUNDS: Dict[str, Callable] = dict(flat=flat, gradient=gradient, stripes=stripes, checker=checker,
                                        noise=noise, clutter=clutter, radial=radial, blotches=blotches,
                                        waves=waves)
TRAIN_BACKGROUNDS = ("flat", "gradient", "stripes", "checker", "noise", "clutter")
HELDOUT_BACKGROUNDS = ("radial", "blotches", "waves")


def draw_background(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 ``[height, width, 3]`` RGB background of ``kind`` (values may leave 0..255;
    the painter clips)."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"unknown background kind {kind!r}; choose from {sorted(BACKGROUNDS)}")
    return np.asarray(BACKGROUNDS[kind](rng, height, width), dtype=np.float32)
