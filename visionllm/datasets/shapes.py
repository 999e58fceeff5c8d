"""Generator of the embedded *shapes* dataset: coloured shapes with exact polygons and text.

Every task of the toolkit (detection, segmentation, grounding, captioning, VQA) can be trained
and evaluated on it on a CPU. Exactness is by construction: an object's pixels are painted from
the pycocotools rasterisation of the very polygons stored as its annotation, so ``annToMask``
returns the drawn pixels. Later shapes occlude earlier ones; an occluded object's annotation is
its visible part (shapely difference). A placement is rejected when the visible part would have
a hole (COCO polygons cannot express holes), become too small, or when the rasterised visible
parts of two objects would share a pixel.

Two styles: ``classic`` (this module; the README's data) and ``varied`` (``shapes_varied``:
backgrounds, continuous colours, sizes, aspect ratios, anti-aliasing, JPEG, 0 to 12 objects,
varied language; train and held-out settings).

Layout written by :func:`write_shapes_dataset` under ``out_dir``::

    images/{train,val}/*.png                 (varied: .png or .jpg; + val_heldout)
    annotations/instances_{split}.json       COCO instances (polygon segmentation)
    annotations/refs_{split}.json            [{ref_id, image_id, ann_id, category_id, split,
                                               sentences: [{raw, sent, tokens}]}]
    annotations/captions_{split}.json        COCO caption format (+ each caption's style)
    annotations/vqa_questions_{split}.json   VQAv2 questions
    annotations/vqa_annotations_{split}.json VQAv2 annotations (10 answers each)
"""
import json
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon

from visionllm.utils.english import article, count_phrase, join, plural
from visionllm.utils.polygon_masks import polygon_mask

SHAPE_KINDS = ("circle", "square", "triangle", "star", "hexagon", "diamond")
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (140, 55, 190),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
}
# Radius ranges as fractions of the shorter image side; the size word is the bucket name.
SIZES = {"small": (0.06, 0.09), "medium": (0.10, 0.14), "big": (0.16, 0.22)}
STYLES = ("classic", "varied")


@dataclass
class ShapeObject:
    """One drawn object: its full outline and the visible (annotated) part after occlusion."""
    kind: str
    colour: str
    size: str
    centre: Tuple[float, float]
    radius: float
    outline: Polygon
    visible: Polygon | MultiPolygon = None
    mask: Optional[np.ndarray] = None  # visible pixels, recorded while drawing
    rgb: Optional[Tuple[int, int, int]] = None  # the drawn colour (varied style; classic uses COLOURS)

    @property
    def category_id(self) -> int:
        return SHAPE_KINDS.index(self.kind) + 1


@dataclass
class ShapesImage:
    width: int
    height: int
    pixels: np.ndarray  # uint8 [H, W, 3] RGB
    objects: List[ShapeObject] = field(default_factory=list)


def shape_outline(kind: str, cx: float, cy: float, r: float, rotation: float) -> Polygon:
    """The outline polygon of a shape kind, centred at (cx, cy) with circumradius r."""
    if kind == "circle":
        angles = [2 * math.pi * i / 32 for i in range(32)]
        radii = [r] * 32
    elif kind == "star":
        angles = [rotation + math.pi * i / 5 for i in range(10)]
        radii = [r if i % 2 == 0 else 0.45 * r for i in range(10)]
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6, "diamond": 4}[kind]
        start = rotation + (math.pi / 4 if kind == "square" else 0.0)
        if kind == "diamond":
            start = rotation
        angles = [start + 2 * math.pi * i / sides for i in range(sides)]
        radii = [r] * sides
        if kind == "diamond":  # a rhombus: narrower across than tall
            radii = [r * (0.65 if i % 2 == 0 else 1.0) for i in range(sides)]
    points = [(cx + rad * math.cos(a), cy - rad * math.sin(a)) for a, rad in zip(angles, radii)]
    return Polygon(points)


def _parts(geometry) -> List[Polygon]:
    if geometry.is_empty:
        return []
    if isinstance(geometry, Polygon):
        return [geometry]
    return [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]


def polygon_to_coco(geometry) -> List[List[float]]:
    """Shapely (multi)polygon → COCO segmentation (list of flat x, y lists, rounded)."""
    segmentation = []
    for part in _parts(geometry):
        coords = np.asarray(part.exterior.coords)[:-1]
        segmentation.append([round(float(v), 2) for v in coords.reshape(-1)])
    return segmentation


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, noisy background in muted tones so the named colours stay distinct."""
    base = rng.uniform(70, 150, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    style = rng.integers(3)
    if style == 0:  # diagonal stripes
        period = rng.uniform(6, 20)
        texture = 18 * np.sin(2 * math.pi * (xx + yy) / period)
    elif style == 1:  # smooth gradient
        texture = 40 * (xx / width - 0.5) + 25 * (yy / height - 0.5)
    else:  # checkerboard
        cell = int(rng.integers(6, 18))
        texture = 15.0 * (((xx // cell) + (yy // cell)) % 2 * 2 - 1)
    noise = rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)  # uniform, std ~7
    img = base[None, None, :] + texture[..., None] + noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _check_visible(obj: ShapeObject, height: int, width: int) -> Optional[List[List[float]]]:
    """COCO polygons of the visible part, or None when they cannot be an exact annotation."""
    parts = _parts(obj.visible)
    if not parts or any(len(p.interiors) for p in parts):
        return None
    if any(p.area < 12 for p in parts) or obj.visible.area < 0.35 * obj.outline.area:
        return None
    segmentation = polygon_to_coco(obj.visible)
    # Rounded coordinates must still form valid, simple polygons.
    for flat in segmentation:
        poly = Polygon(np.asarray(flat).reshape(-1, 2))
        if len(flat) < 6 or not poly.is_valid or poly.area <= 0:
            return None
    return segmentation


def place_on_top(objects: List[ShapeObject], new: ShapeObject, height: int,
                 width: int) -> Optional[Tuple[List[ShapeObject], List[List[List[float]]]]]:
    """Put ``new`` on top of ``objects``: the objects' visible parts lose what it covers.

    Returns (objects + [new], COCO segmentation of every visible part) with each object's
    ``mask`` set to its rasterised visible part, or None (and ``objects`` unchanged) when an
    annotation could not be exact: a visible part with a hole or too small, or rasterised
    visible parts that would share a pixel.
    """
    candidates = objects + [new]
    previous = [o.visible for o in objects]
    for o in objects:
        o.visible = o.visible.difference(new.outline)
    new_segs = [_check_visible(o, height, width) for o in candidates]
    masks = [polygon_mask(s, height, width) if s is not None else None for s in new_segs]
    ok = all(m is not None and m.any() for m in masks)
    if ok:  # rasterised visible parts must be pixel-disjoint for the annotation to be exact
        ok = int(np.sum([m.sum() for m in masks])) == int(np.logical_or.reduce(masks).sum())
    if not ok:
        for o, vis in zip(objects, previous):
            o.visible = vis
        return None
    for o, m in zip(candidates, masks):
        o.mask = m
    return candidates, new_segs


def generate_image(rng: np.random.Generator, width: int, height: int, max_objects: int = 6,
                   overlap_prob: float = 0.3) -> Tuple[ShapesImage, List[List[List[float]]]]:
    """Draw one image; returns it with the COCO segmentation of every object (same order)."""
    pixels = _background(rng, height, width)
    objects: List[ShapeObject] = []
    segmentations: List[List[List[float]]] = []
    short = min(width, height)
    target = int(rng.integers(1, max_objects + 1))
    attempts = 0
    while len(objects) < target and attempts < 40 * target:
        attempts += 1
        size = str(rng.choice(list(SIZES)))
        radius = float(rng.uniform(*SIZES[size]) * short)
        cx = float(rng.uniform(radius + 1, width - radius - 1))
        cy = float(rng.uniform(radius + 1, height - radius - 1))
        kind = str(rng.choice(SHAPE_KINDS))
        colour = str(rng.choice(list(COLOURS)))
        outline = shape_outline(kind, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)))
        overlaps = [o for o in objects if o.visible.intersects(outline)]
        if overlaps and rng.random() > overlap_prob:
            continue
        new = ShapeObject(kind, colour, size, (cx, cy), radius, outline, visible=outline)
        placed = place_on_top(objects, new, height, width)
        if placed is None:
            continue
        objects, segmentations = placed
    for o in objects:
        colour = np.asarray(COLOURS[o.colour], dtype=np.float32)
        shade = colour[None, :] + 6 * rng.standard_normal((int(o.mask.sum()), 3), dtype=np.float32)
        pixels[o.mask] = np.clip(shade, 0, 255).astype(np.uint8)
    return ShapesImage(width, height, pixels, objects), segmentations


# ----------------------------------------------------------------------------- text
def _noun(obj: ShapeObject, with_colour: bool = True) -> str:
    return f"{obj.colour} {obj.kind}" if with_colour else obj.kind


def referring_expressions(objects: Sequence[ShapeObject], index: int, width: int) -> List[str]:
    """Expressions that single out ``objects[index]`` (empty when none is unambiguous)."""
    target = objects[index]
    sentences = []
    same_kind = [o for o in objects if o.kind == target.kind]
    same_ck = [o for o in same_kind if o.colour == target.colour]
    if len(same_kind) == 1:
        sentences.append(f"the {target.kind}")
    if len(same_ck) == 1:
        sentences.append(f"the {target.colour} {target.kind}")
    groups = [(same_ck, True)] + ([(same_kind, False)] if len(same_kind) > 1 else [])
    for group, with_colour in groups:
        if len(group) < 2:
            continue
        others = [o for o in group if o is not target]
        noun = _noun(target, with_colour)
        if all(target.radius > 1.4 * o.radius for o in others):
            sentences.append(f"the big {noun}")
        if all(target.radius * 1.4 < o.radius for o in others):
            sentences.append(f"the small {noun}")
        margin = 0.08 * width
        if all(target.centre[0] + margin < o.centre[0] for o in others):
            sentences.append(f"the {noun} on the left")
            sentences.append(f"the leftmost {noun}")
        if all(target.centre[0] - margin > o.centre[0] for o in others):
            sentences.append(f"the {noun} on the right")
            sentences.append(f"the rightmost {noun}")
        if all(target.centre[1] + margin < o.centre[1] for o in others):
            sentences.append(f"the {noun} at the top")
        if all(target.centre[1] - margin > o.centre[1] for o in others):
            sentences.append(f"the {noun} at the bottom")
    return list(dict.fromkeys(sentences))


def captions(objects: Sequence[ShapeObject], width: int) -> List[Tuple[str, str]]:
    """(caption, style) pairs of one image, from exact counts and positions: the full list by
    colour and kind (``objects``), the kinds (``kinds``), the count (``count``) and, when two
    objects stand apart, a relation (``relation``)."""
    by_ck: Dict[str, int] = {}
    by_kind: Dict[str, int] = {}
    for o in objects:
        by_ck[f"{o.colour} {o.kind}"] = by_ck.get(f"{o.colour} {o.kind}", 0) + 1
        by_kind[o.kind] = by_kind.get(o.kind, 0) + 1
    result = [
        (join([count_phrase(c, n) for n, c in by_ck.items()]), "objects"),
        (join([count_phrase(c, n) for n, c in by_kind.items()]) + " on a textured background", "kinds"),
        (f"{count_phrase(len(objects), 'coloured shape')} on a patterned background", "count"),
    ]
    if len(objects) >= 2:
        a, b = sorted(objects[:2], key=lambda o: o.centre[0])
        if b.centre[0] - a.centre[0] > 0.1 * width:
            result.append((f"{count_phrase(1, _noun(a))} to the left of {count_phrase(1, _noun(b))}", "relation"))
    return result


def questions(objects: Sequence[ShapeObject], width: int, rng: np.random.Generator) -> List[Tuple[str, str, str]]:
    """(question, answer, answer_type) pairs: counting, colour, position, presence."""
    pairs = []
    kind = str(rng.choice(SHAPE_KINDS))
    pairs.append((f"how many {plural(kind)} are there?", str(sum(o.kind == kind for o in objects)), "number"))
    colour = str(rng.choice(list(COLOURS)))
    pairs.append((f"how many {colour} shapes are there?", str(sum(o.colour == colour for o in objects)), "number"))
    unique_kinds = [o for o in objects if sum(p.kind == o.kind for p in objects) == 1]
    if unique_kinds:
        obj = unique_kinds[int(rng.integers(len(unique_kinds)))]
        pairs.append((f"what color is the {obj.kind}?", obj.colour, "other"))
        cx = obj.centre[0] / width
        if cx < 0.4 or cx > 0.6:
            pairs.append((f"is the {obj.kind} on the left or on the right?", "left" if cx < 0.4 else "right", "other"))
    kind, colour = str(rng.choice(SHAPE_KINDS)), str(rng.choice(list(COLOURS)))
    present = any(o.kind == kind and o.colour == colour for o in objects)
    pairs.append((f"is there {article(colour)} {colour} {kind}?", "yes" if present else "no", "yes/no"))
    return pairs


# ----------------------------------------------------------------------------- writer
def _bbox_of(mask: np.ndarray) -> List[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x1, y1, x2, y2 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def _image_job(args) -> dict:
    """Generate (and save) one image; seeded by (seed, split, index) so any worker order gives
    the same dataset."""
    split, index, seed, img_dir, image_size, max_objects, write_images, style, settings = args
    if style == "varied":
        from .shapes_varied import varied_image_record  # it imports this module
        return varied_image_record(split, index, seed, img_dir, write_images, settings)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    width = int(rng.integers(image_size[0], image_size[1] + 1))
    height = int(rng.integers(image_size[0], image_size[1] + 1))
    drawn, segmentations = generate_image(rng, width, height, max_objects)
    file_name = f"{split}_{index + 1:06d}.png"
    if write_images:
        Image.fromarray(drawn.pixels).save(os.path.join(img_dir, file_name), compress_level=1)
    objects = [dict(category_id=o.category_id, colour=o.colour, size=o.size, segmentation=seg,
                    mask=o.mask, expressions=referring_expressions(drawn.objects, i, width))
               for i, (o, seg) in enumerate(zip(drawn.objects, segmentations))]
    return dict(file_name=file_name, width=width, height=height, objects=objects,
                captions=captions(drawn.objects, width), qa=questions(drawn.objects, width, rng))


def build_split(split: str, num_images: int, seed: int, out_dir: str, image_size: Tuple[int, int] = (128, 192),
                max_objects: int = 6, write_images: bool = True, record_masks: bool = False,
                workers: int = 1, style: str = "classic", settings: str = "train") -> dict:
    """Generate and write one split; returns the five annotation dicts (and masks if asked).

    ``style="classic"`` is the original generator (``image_size`` and ``max_objects`` apply);
    ``style="varied"`` draws from ``shapes_varied.SETTINGS[settings]`` ("train" or "heldout").
    """
    if style not in STYLES:
        raise ValueError(f"unknown shapes style {style!r}; choose from {STYLES}")
    img_dir = os.path.join(out_dir, "images", split)
    os.makedirs(img_dir, exist_ok=True)
    jobs = [(split, i, seed, img_dir, tuple(image_size), max_objects, write_images, style, settings)
            for i in range(num_images)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            records = pool.map(_image_job, jobs, chunksize=16)
    else:
        records = [_image_job(job) for job in jobs]
    categories = [dict(id=i + 1, name=k, supercategory="shape") for i, k in enumerate(SHAPE_KINDS)]
    images, annotations, refs, caption_anns, vqa_questions, vqa_anns = [], [], [], [], [], []
    recorded_masks: Dict[int, np.ndarray] = {}
    for image_id, record in enumerate(records, start=1):
        file_name = record["file_name"]
        images.append(dict(id=image_id, file_name=file_name, width=record["width"], height=record["height"],
                           **record.get("image_extra", {})))
        for obj in record["objects"]:
            ann_id = len(annotations) + 1
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=obj["category_id"],
                                    segmentation=obj["segmentation"], area=float(obj["mask"].sum()),
                                    bbox=_bbox_of(obj["mask"]), iscrowd=0,
                                    attributes=dict(colour=obj["colour"], size=obj["size"], **obj.get("extra", {}))))
            if record_masks:
                recorded_masks[ann_id] = obj["mask"]
            if obj["expressions"]:
                refs.append(dict(ref_id=len(refs) + 1, image_id=image_id, ann_id=ann_id,
                                 category_id=obj["category_id"], split=split, file_name=file_name,
                                 sentences=[dict(raw=s, sent=s, tokens=s.split()) for s in obj["expressions"]]))
        for text, style in record["captions"]:
            caption_anns.append(dict(id=len(caption_anns) + 1, image_id=image_id, caption=text, style=style))
        for question, answer, answer_type in record["qa"]:
            qid = len(vqa_questions) + 1
            vqa_questions.append(dict(image_id=image_id, question=question, question_id=qid))
            vqa_anns.append(dict(question_id=qid, image_id=image_id, answer_type=answer_type,
                                 question_type=" ".join(question.split()[:2]), multiple_choice_answer=answer,
                                 answers=[dict(answer=answer, answer_confidence="yes", answer_id=i + 1)
                                          for i in range(10)]))
    info = dict(description=f"VisionLLM shapes ({split}, seed {seed})", version="1.0")
    if style != "classic":
        info["description"] = f"VisionLLM shapes ({split}, seed {seed}, {style} style, {settings} settings)"
    result = dict(
        instances=dict(info=info, images=images, annotations=annotations, categories=categories),
        refs=refs,
        captions=dict(info=info, images=images, annotations=caption_anns),
        vqa_questions=dict(info=info, data_subtype=split, questions=vqa_questions),
        vqa_annotations=dict(info=info, data_subtype=split, annotations=vqa_anns))
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    for key, data in result.items():
        with open(os.path.join(ann_dir, f"{key}_{split}.json"), "w") as f:
            json.dump(data, f)
    if record_masks:
        result["masks"] = recorded_masks
    return result


def write_shapes_dataset(out_dir: str = "data/shapes", num_train: int = 2000, num_val: int = 200, seed: int = 0,
                         image_size: Tuple[int, int] = (128, 192), max_objects: int = 6,
                         workers: int = 1, style: str = "classic", val_settings: str = "train",
                         num_heldout: int = 0) -> Dict[str, dict]:
    """Write the train and val splits; deterministic by ``seed`` (independent of ``workers``).

    Varied style: train uses the "train" settings, val ``val_settings``; ``num_heldout > 0``
    adds a ``val_heldout`` split drawn with the "heldout" settings (nothing training saw).
    """
    splits = [("train", num_train, "train"), ("val", num_val, val_settings)]
    if num_heldout:
        if style != "varied":
            raise ValueError("a held-out split needs style='varied'")
        splits.append(("val_heldout", num_heldout, "heldout"))
    return {split: build_split(split, n, seed, out_dir, image_size, max_objects, workers=workers, style=style,
                               settings=settings)
            for split, n, settings in splits}
