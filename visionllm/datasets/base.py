"""Shared helpers of the readers: annotation-file checks, bad-annotation accounting."""
import json
import os
import pickle
import warnings
from collections import Counter
from typing import Any, List, Optional, Sequence, Union

import numpy as np
from shapely.geometry import Polygon


def check_ann_file(path: str) -> str:
    """Raise a one-line ``FileNotFoundError`` naming ``path`` when it does not exist."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    return path


def load_annotation(path: str) -> Any:
    """Load a json or pickle annotation file (RefCOCO ships refs as a pickle)."""
    check_ann_file(path)
    if path.endswith((".p", ".pkl", ".pickle")):
        with open(path, "rb") as f:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:  # the official refs(*).p files are Python 2 pickles
                f.seek(0)
                return _utf8_from_latin1(pickle.load(f, encoding="latin1"))
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _utf8_from_latin1(value: Any) -> Any:
    """Python 2 pickles hold UTF-8 bytes as ``str``; read as latin-1 (the only lossless choice),
    "café" arrives as "cafÃ©". Re-decode every string whose latin-1 bytes are valid UTF-8."""
    if isinstance(value, str):
        try:
            return value.encode("latin1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return value
    if isinstance(value, list):
        return [_utf8_from_latin1(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_utf8_from_latin1(v) for v in value)
    if isinstance(value, dict):
        return {_utf8_from_latin1(k): _utf8_from_latin1(v) for k, v in value.items()}
    return value


class BadAnnotations:
    """Counts skipped annotations by reason and reports them in ONE warning per dataset.

    ``examples[reason]`` keeps the first few offending items (annotation / question ids, image
    files) so a report can point at them."""

    max_examples = 3

    def __init__(self, owner: str):
        self.owner = owner
        self.counts: Counter = Counter()
        self.examples: dict = {}

    def skip(self, reason: str, count: int = 1, example: Any = None) -> None:
        self.counts[reason] += count
        if example is not None:
            kept = self.examples.setdefault(reason, [])
            if len(kept) < self.max_examples and example not in kept:
                kept.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self) -> None:
        if self.counts:
            detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
            warnings.warn(f"{self.owner}: skipped {self.total} bad annotations ({detail})", stacklevel=3)


def xywh_box_problem(bbox: Sequence[float], width: Optional[float] = None, height: Optional[float] = None):
    """Reason why a COCO ``[x, y, w, h]`` box is unusable, or None. Returns the clipped xyxy box."""
    if bbox is None or len(bbox) != 4 or not np.all(np.isfinite(bbox)):
        return "malformed box", None
    x, y, w, h = (float(v) for v in bbox)
    x1, y1, x2, y2 = x, y, x + w, y + h
    if w <= 0 or h <= 0:
        return "zero-area box", None
    if width is not None and height is not None:  # clip like COCO's own loaders do
        x1, x2 = max(0.0, x1), min(float(width), x2)
        y1, y2 = max(0.0, y1), min(float(height), y2)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return "box outside the image", None
    return None, [x1, y1, x2, y2]


def join_root(root: Optional[str], path: Union[str, Sequence[str]]) -> Union[str, List[str]]:
    """``path`` (or each of a list) under the dataset's ``data_root`` unless empty or absolute."""
    if not isinstance(path, str):
        return [join_root(root, p) for p in path]
    return os.path.join(root, path) if path and root and not os.path.isabs(path) else path


def load_image_boxes(paths: Union[str, Sequence[str]]) -> dict:
    """Boxes of COCO instances json files by image id, for tasks whose own annotation has none
    (caption, VQA): ``{image_id: [dict(bbox=xyxy, bbox_label=-1, ignore_flag)]}``. The label is
    -1 because those tasks name no categories; the boxes only tell the image tokenizer where the
    objects are. Several files (e.g. COCO train2017 + val2017 for the Karpathy split) are merged.
    Unusable boxes are left out (the instances readers count them)."""
    boxes = {}
    for path in [paths] if isinstance(paths, str) else paths:
        coco = load_annotation(path)
        sizes = {img["id"]: (img.get("width"), img.get("height")) for img in coco.get("images", [])}
        for ann in coco.get("annotations", []):
            problem, box = xywh_box_problem(ann.get("bbox"), *sizes.get(ann["image_id"], (None, None)))
            if problem is None:
                boxes.setdefault(ann["image_id"], []).append(
                    dict(bbox=box, bbox_label=-1, ignore_flag=int(bool(ann.get("iscrowd", 0)))))
    return boxes


def polygon_problem(segmentation) -> Optional[str]:
    """Reason why a COCO polygon segmentation is unusable, or None."""
    if not isinstance(segmentation, list) or len(segmentation) == 0:
        return "empty polygon"
    for flat in segmentation:
        if not isinstance(flat, (list, tuple)) or len(flat) < 6 or len(flat) % 2:
            return "empty polygon"
        poly = Polygon(np.asarray(flat, dtype=np.float64).reshape(-1, 2))
        if poly.convex_hull.area <= 0:  # all points on one line (or one point)
            return "empty polygon"
        if not poly.is_valid:
            return "self-intersecting polygon"
    return None


def image_path(prefix: str, *parts: str) -> str:
    return os.path.join(prefix or "", *[p for p in parts if p])


def sentences_of(ref: dict) -> List[str]:
    """RefCOCO sentences: dicts with 'sent'/'raw' (pickle and our json) or plain strings."""
    result = []
    for sentence in ref.get("sentences", []):
        if isinstance(sentence, str):
            text = sentence
        else:
            text = sentence.get("sent") or sentence.get("raw") or ""
        if text.strip():
            result.append(text.strip())
    return result
