"""The *varied* style of the shapes generator: images drawn with wide, split-dependent settings.

What varies per image (see docs/datasets.md, "Varied shapes data"): background kind
(``shape_backgrounds``), image size and aspect ratio, 0 to ``max_objects`` objects with
continuous colours named through ``shape_colours``, radius and rotation, overlap and
occlusion, anti-aliased edges, PNG or JPEG file at a random quality.

Annotations follow the COCO convention for occlusion: an object's segmentation is the polygon
of its *visible* part (outline minus the outlines of later objects; placements whose visible
part would have a hole or be tiny are rejected, as in the classic style), its bbox and area
those of the pycocotools raster of that polygon. Anti-aliasing blends only the pixels an
outline covers partly, so every pixel of a mask's interior has the object's colour (plus a
little noise and, in JPEG files, compression error).

``SETTINGS["train"]`` and ``SETTINGS["heldout"]`` share no background kind, colour cube, radius
range or aspect-ratio range: a split drawn with ``heldout`` shows settings training never saw.
"""
import math
import os
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .shape_backgrounds import HELDOUT_BACKGROUNDS, MIN_OBJECT_DIAMETER, TRAIN_BACKGROUNDS, draw_background
from .shape_colours import COLOUR_NAMES, draw_colour
from .shape_phrasing import Thing, captions, questions, referring_expressions
from .shapes import SHAPE_KINDS, ShapeObject, place_on_top, shape_outline
from visionllm.utils.polygon_masks import polygon_mask

Range = Tuple[float, float]


@dataclass(frozen=True)
class VariedSettings:
    """The ranges one split is drawn from (each range list is a union of intervals)."""
    backgrounds: Tuple[str, ...]
    heldout_colours: bool
    radius_ranges: Tuple[Range, ...]  # circumradius / shorter image side
    side_ranges: Tuple[Range, ...]  # sqrt(width * height) in pixels
    aspect_ranges: Tuple[Range, ...]  # width / height
    max_objects: int = 12
    overlap_prob: float = 0.5  # chance that a placement overlapping earlier objects is tried
    jpeg_prob: float = 0.5
    jpeg_quality: Tuple[int, int] = (55, 95)
    supersample: int = 4  # anti-aliasing: coverage measured on a 4x finer grid
    noise_std: float = 4.0  # per-pixel colour noise of the objects


SETTINGS = {
    "train": VariedSettings(backgrounds=TRAIN_BACKGROUNDS, heldout_colours=False,
                            radius_ranges=((0.06, 0.17),), side_ranges=((112.0, 208.0),),
                            aspect_ranges=((0.75, 1.34),)),
    "heldout": VariedSettings(backgrounds=HELDOUT_BACKGROUNDS, heldout_colours=True,
                              radius_ranges=((0.045, 0.06), (0.17, 0.2)), side_ranges=((208.0, 256.0),),
                              aspect_ranges=((0.55, 0.75), (1.34, 1.8))),
}
SIZE_WORDS = ((0.09, "small"), (0.14, "medium"), (1.0, "big"))  # radius fraction upper bounds


def _uniform_union(rng: np.random.Generator, ranges: Sequence[Range]) -> float:
    """Uniform over a union of intervals (weighted by their lengths)."""
    lengths = np.asarray([hi - lo for lo, hi in ranges], dtype=np.float64)
    lo, hi = ranges[int(rng.choice(len(ranges), p=lengths / lengths.sum()))]
    return float(rng.uniform(lo, hi))


def in_ranges(value: float, ranges: Sequence[Range]) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def size_word(radius_fraction: float) -> str:
    return next(word for bound, word in SIZE_WORDS if radius_fraction < bound)


def coverage(outline, height: int, width: int, supersample: int) -> Tuple[np.ndarray, Tuple[slice, slice]]:
    """The fraction of each pixel an outline covers (pycocotools rasters on a finer grid), on
    the outline's bounding window; returns (coverage [h, w] float32, window slices)."""
    x1, y1, x2, y2 = outline.bounds
    x0, y0 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    xe, ye = min(width, int(math.ceil(x2)) + 1), min(height, int(math.ceil(y2)) + 1)
    points = (np.asarray(outline.exterior.coords)[:-1] - [x0, y0]) * supersample
    fine = polygon_mask([points], (ye - y0) * supersample, (xe - x0) * supersample)
    cover = fine.reshape(ye - y0, supersample, xe - x0, supersample).mean(axis=(1, 3), dtype=np.float32)
    return cover, (slice(y0, ye), slice(x0, xe))


def image_size(rng: np.random.Generator, settings: VariedSettings) -> Tuple[int, int]:
    side = _uniform_union(rng, settings.side_ranges)
    aspect = _uniform_union(rng, settings.aspect_ranges)
    width, height = int(round(side * math.sqrt(aspect))), int(round(side / math.sqrt(aspect)))
    # Rounding must not move the ratio out of its range.
    while not in_ranges(width / height, settings.aspect_ranges):
        width += 1 if width / height < aspect else -1
    return width, height


def generate_varied_image(rng: np.random.Generator, settings: VariedSettings):
    """Draw one image; returns (pixels uint8 [H, W, 3], background kind, objects, segmentations)."""
    width, height = image_size(rng, settings)
    kind_of_background = str(settings.backgrounds[int(rng.integers(len(settings.backgrounds)))])
    canvas = draw_background(kind_of_background, rng, height, width)
    short = min(width, height)
    objects: List[ShapeObject] = []
    segmentations: List[List[List[float]]] = []
    target = int(rng.integers(0, settings.max_objects + 1))
    attempts = 0
    while len(objects) < target and attempts < 30 * target:
        attempts += 1
        fraction = _uniform_union(rng, settings.radius_ranges)
        radius = max(fraction * short, MIN_OBJECT_DIAMETER / 2)
        if 2 * radius + 2 >= short:
            continue
        cx = float(rng.uniform(radius + 1, width - radius - 1))
        cy = float(rng.uniform(radius + 1, height - radius - 1))
        kind = str(SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))])
        outline = shape_outline(kind, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)))
        touching = [o for o in objects if o.outline.intersects(outline)]
        if touching and rng.random() > settings.overlap_prob:
            continue
        x1, y1, x2, y2 = (int(v) for v in outline.bounds)
        under = canvas[max(0, y1):y2 + 1, max(0, x1):x2 + 1].reshape(-1, 3).mean(axis=0)
        drawn = draw_colour(rng, settings.heldout_colours, avoid=[under] + [o.rgb for o in touching])
        if drawn is None:
            continue
        colour, rgb = drawn
        new = ShapeObject(kind, colour, size_word(radius / short), (cx, cy), radius, outline, visible=outline,
                          rgb=rgb)
        placed = place_on_top(objects, new, height, width)
        if placed is not None:
            objects, segmentations = placed
    for o in objects:  # in drawing order: later objects cover earlier ones
        cover, window = coverage(o.outline, height, width, settings.supersample)
        paint = np.asarray(o.rgb, np.float32) + settings.noise_std * rng.standard_normal(cover.shape + (3,),
                                                                                         dtype=np.float32)
        canvas[window] = cover[..., None] * paint + (1 - cover[..., None]) * canvas[window]
    pixels = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return pixels, kind_of_background, objects, segmentations


def _box_centre(mask: np.ndarray) -> Tuple[float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (cols[0] + cols[-1] + 1) / 2.0, (rows[0] + rows[-1] + 1) / 2.0


def describe(objects: Sequence[ShapeObject], width: int, height: int, rng: np.random.Generator):
    """(per-object referring expressions, captions, VQA triples) of a drawn image; positions
    are the centres of the visible parts' boxes (what an annotation reader sees)."""
    things = [Thing(o.kind, o.colour, *_box_centre(o.mask), o.radius) for o in objects]
    expressions = [referring_expressions(things, i, width, height, rng) for i in range(len(things))]
    return (expressions, captions(things, width, height, rng),
            questions(things, width, height, rng, colours=list(COLOUR_NAMES)))


def settings_of(name: Optional[str]) -> VariedSettings:
    if name not in SETTINGS:
        raise ValueError(f"unknown varied settings {name!r}; choose from {sorted(SETTINGS)}")
    return SETTINGS[name]


def varied_image_record(split: str, index: int, seed: int, img_dir: str, write_images: bool, settings: str) -> dict:
    """Draw, describe and save image ``index`` of ``split`` (PNG or JPEG) and return the record
    ``shapes.build_split`` writes: the background kind and settings go on the image, each
    object's drawn RGB and radius into its attributes. Seeded by (seed, split, index)."""
    chosen = settings_of(settings)
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index, 1])
    pixels, background, objects, segmentations = generate_varied_image(rng, chosen)
    height, width = pixels.shape[:2]
    expressions, caption_texts, qa = describe(objects, width, height, rng)
    jpeg = rng.random() < chosen.jpeg_prob
    quality = int(rng.integers(chosen.jpeg_quality[0], chosen.jpeg_quality[1] + 1))
    file_name = f"{split}_{index + 1:06d}.{'jpg' if jpeg else 'png'}"
    if write_images:
        path = os.path.join(img_dir, file_name)
        if jpeg:
            Image.fromarray(pixels).save(path, quality=quality)
        else:
            Image.fromarray(pixels).save(path, compress_level=1)
    short = min(width, height)
    records = [dict(category_id=o.category_id, colour=o.colour, size=o.size, segmentation=seg, mask=o.mask,
                    expressions=expressions[i],
                    extra=dict(rgb=list(o.rgb), radius=round(o.radius / short, 4)))
               for i, (o, seg) in enumerate(zip(objects, segmentations))]
    return dict(file_name=file_name, width=width, height=height, objects=records, captions=caption_texts, qa=qa,
                image_extra=dict(background=background, settings=settings))
