"""Pictures of predictions (``tools/test.py --show-dir``): boxes, polygons and text drawn on
the original image, one PNG per sample."""
import os
import os.path as osp
import textwrap
from typing import Optional

import numpy as np
from mmengine.hooks import Hook
from PIL import Image, ImageDraw

from visionllm.registry import HOOKS

from .utils import to_dict, to_numpy

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_prediction(sample, score_thr: float = 0.3) -> Image.Image:
    """The original image with the sample's predictions (coordinates in ``ori_shape``)."""
    sample = to_dict(sample)
    image = Image.open(sample["img_path"]).convert("RGB")
    draw = ImageDraw.Draw(image)
    pred = sample.get("pred_instances") or {}
    names = list(sample.get("categories") or [])
    ids = list(sample.get("category_ids") or [])
    boxes = to_numpy(pred.get("bboxes", np.zeros((0, 4)))).reshape(-1, 4)
    scores = to_numpy(pred.get("scores", np.ones(len(boxes)))).reshape(-1)
    labels = to_numpy(pred.get("labels", np.zeros(len(boxes), np.int64))).reshape(-1)
    polygons = pred.get("polygons")
    polygons = to_numpy(polygons) if polygons is not None else None
    for i, box in enumerate(boxes):
        if i < len(scores) and scores[i] < score_thr and sample.get("task") != "grounding":
            continue
        label = int(labels[i]) if i < len(labels) else 0
        colour = _PALETTE[label % len(_PALETTE)]
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        if polygons is not None and i < len(polygons):
            draw.polygon([tuple(map(float, p)) for p in polygons[i]], outline=colour)
        name = names[ids.index(label)] if label in ids else str(label)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {scores[i]:.2f}" if i < len(scores) else name,
                  fill=colour)
    text = sample.get("pred_text")
    if text:
        draw.text((3, 3), "\n".join(textwrap.wrap(text, 40)), fill=(255, 255, 255))
    return image


@HOOKS.register_module()
class DrawPredictionsHook(Hook):
    """Writes ``<show_dir>/<task>_<img_id>_<n>.png`` for every test (and val) prediction."""

    def __init__(self, show_dir: str, score_thr: float = 0.3, max_images: Optional[int] = None):
        self.show_dir = show_dir
        self.score_thr = score_thr
        self.max_images = max_images
        self.count = 0

    def _draw(self, outputs) -> None:
        os.makedirs(self.show_dir, exist_ok=True)
        for sample in outputs or []:
            if self.max_images is not None and self.count >= self.max_images:
                return
            sample = to_dict(sample)
            name = f"{sample.get('task')}_{sample.get('img_id')}_{self.count}.png"
            draw_prediction(sample, self.score_thr).save(osp.join(self.show_dir, name))
            self.count += 1

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._draw(outputs)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._draw(outputs)
