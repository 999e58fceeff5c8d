"""Pictures of predictions: boxes, polygons, masks and text drawn on the image (PIL only).

:class:`VisionLLMVisualizer` is the one drawer of the package (registered in ``VISUALIZERS``):
the inferencer's ``visualize`` draws a :class:`~visionllm.apis.VisionLLMResult` with it and
``tools/test.py --show-dir`` draws the test loop's data samples with it (through
``VisionLLMVisualizationHook``), so both give the same picture for the same prediction.
"""
import os
import textwrap
from typing import List, Optional, Sequence

import numpy as np
from mmengine.visualization import Visualizer
from PIL import Image, ImageDraw

from visionllm.registry import VISUALIZERS

from .palette import colour

# Input regions are drawn in a colour that the category palette does not use.
_REGION_RGB = (255, 255, 255)
# Small images are enlarged (nearest neighbour) so that labels stay readable.
_MIN_LONG_SIDE = 384.0


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def draw_instances(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   names: Sequence[str], polygons: Optional[np.ndarray] = None, masks: Optional[np.ndarray] = None,
                   text: Optional[str] = None, score_thr: float = 0.3, keep_all: bool = False,
                   regions: Optional[np.ndarray] = None, region_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The RGB ``image`` with the instances (``boxes [n, 4]`` xyxy pixels, ``labels`` indexing
    ``names`` and the palette, optional ``polygons [n, K, 2]`` and ``masks [n, H, W]``) whose score
    reaches ``score_thr`` (every instance when ``keep_all``), the ``regions [R, 4]`` (white,
    labelled by ``region_names``, or "region k" in placeholder order) and ``text`` at the bottom."""
    canvas = Image.fromarray(image).convert("RGB")
    scale = max(1.0, _MIN_LONG_SIDE / max(canvas.size))
    if scale > 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.NEAREST)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    keep = [i for i, s in enumerate(np.asarray(scores).tolist()) if keep_all or s >= score_thr]
    for i in keep:
        label = int(labels[i])
        rgb = colour(label)
        if masks is not None and i < len(masks):
            mask = Image.fromarray(np.asarray(masks[i]).astype(np.uint8) * 90).resize(canvas.size, Image.NEAREST)
            overlay.paste(Image.new("RGBA", canvas.size, rgb + (255,)), (0, 0), mask)
        if polygons is not None and i < len(polygons):
            points = [(float(x) * scale, float(y) * scale) for x, y in polygons[i]]
            draw.line(points + points[:1], fill=rgb + (255,), width=2)
        x1, y1, x2, y2 = (float(v) * scale for v in boxes[i])
        draw.rectangle([x1, y1, x2, y2], outline=rgb + (255,), width=2)
        name = names[label] if 0 <= label < len(names) else str(label)
        caption = f"{name} {float(scores[i]):.2f}"
        draw.rectangle([x1, max(0, y1 - 12), x1 + 6 * len(caption) + 4, max(12, y1)], fill=rgb + (200,))
        draw.text((x1 + 2, max(0, y1 - 12)), caption, fill=(255, 255, 255, 255))
    for k, region in enumerate(np.asarray(regions if regions is not None else np.zeros((0, 4))).reshape(-1, 4)):
        x1, y1, x2, y2 = (float(v) * scale for v in region)
        # White inside black: visible on light and dark images alike.
        draw.rectangle([x1, y1, x2, y2], outline=(0, 0, 0, 255), width=4)
        draw.rectangle([x1, y1, x2, y2], outline=_REGION_RGB + (255,), width=2)
        label = str(region_names[k]) if region_names is not None and k < len(region_names) else f"region {k + 1}"
        draw.rectangle([x1, y2 + 2, x1 + 6 * len(label) + 4, y2 + 14], fill=(0, 0, 0, 200))
        draw.text((x1 + 2, y2 + 2), label, fill=_REGION_RGB + (255,))
    if text is not None:
        lines = textwrap.wrap(text, width=max(20, canvas.width // 7)) or [""]
        draw.rectangle([0, canvas.height - 14 * len(lines) - 4, canvas.width, canvas.height], fill=(0, 0, 0, 160))
        for row, line in enumerate(lines):
            draw.text((4, canvas.height - 14 * (len(lines) - row) - 2), line, fill=(255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB"))


def _save(picture: np.ndarray, out_file: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    Image.fromarray(picture).save(out_file)
    return out_file


@VISUALIZERS.register_module()
class VisionLLMVisualizer(Visualizer):
    """Draws VisionLLM predictions (mmengine ``Visualizer`` interface, PIL drawing).

    Args:
        name: the instance name (mmengine keeps one instance per name).
        score_thr: instances scoring below it are left out (grounding's one box always shows).
        **kwargs: mmengine ``Visualizer`` arguments (``vis_backends``, ``save_dir``, ...).
    """

    def __init__(self, name: str = "visualizer", score_thr: float = 0.3, **kwargs):
        super().__init__(name=name, **kwargs)
        self.score_thr = score_thr

    def draw_result(self, image: np.ndarray, result, score_thr: Optional[float] = None) -> np.ndarray:
        """The picture of a ``VisionLLMResult`` on its RGB input ``image`` (coordinates in the
        image's pixels, labels indexing ``result.categories``)."""
        picture = draw_instances(image, result.boxes, result.scores, result.labels, result.categories,
                                 polygons=result.polygons, masks=result.masks, text=result.text,
                                 score_thr=self.score_thr if score_thr is None else score_thr,
                                 keep_all=_single_instance(result.task), regions=getattr(result, "regions", None),
                                 region_names=getattr(result, "region_names", None))
        self.set_image(picture)
        return picture

    def draw_data_sample(self, image: np.ndarray, data_sample, score_thr: Optional[float] = None) -> np.ndarray:
        """The picture of a predicted data sample (``DetDataSample`` or its ``to_dict()``) on the
        original RGB ``image``: ``pred_instances`` in ``ori_shape`` pixels with labels that are
        the sample's ``category_ids``, ``pred_text``, and the regions of :func:`_sample_regions`."""
        sample = data_sample.to_dict() if hasattr(data_sample, "to_dict") else dict(data_sample)
        pred = sample.get("pred_instances") or {}
        names: List[str] = list(sample.get("categories") or [])
        ids = [int(i) for i in sample.get("category_ids") or range(len(names))]
        boxes = _as_numpy(pred.get("bboxes", np.zeros((0, 4)))).reshape(-1, 4)
        scores = _as_numpy(pred.get("scores", np.ones(len(boxes)))).reshape(-1)
        raw_labels = _as_numpy(pred.get("labels", np.zeros(len(boxes), np.int64))).reshape(-1)
        # Category ids → positions in the sample's category list (names and colours), as the
        # inferencer's labels are; an id outside the list is named by its number.
        position = {category_id: i for i, category_id in enumerate(ids)}
        for value in raw_labels.tolist():
            if int(value) not in position:
                position[int(value)] = len(names)
                names.append(str(int(value)))
        labels = np.array([position[int(v)] for v in raw_labels.tolist()], dtype=np.int64)
        regions, region_names = _sample_regions(sample)
        polygons = _as_numpy(pred["polygons"]) if pred.get("polygons") is not None else None
        masks = _as_numpy(pred["masks"]) if pred.get("masks") is not None else None
        picture = draw_instances(image, boxes, scores, labels, names, polygons=polygons, masks=masks,
                                 text=sample.get("pred_text"),
                                 score_thr=self.score_thr if score_thr is None else score_thr,
                                 keep_all=_single_instance(sample.get("task")),
                                 regions=regions, region_names=region_names)
        self.set_image(picture)
        return picture

    def add_datasample(self, name: str, image: np.ndarray, data_sample=None, draw_gt: bool = False,
                       draw_pred: bool = True, show: bool = False, wait_time: float = 0, step: int = 0,
                       out_file: Optional[str] = None, pred_score_thr: Optional[float] = None) -> None:
        """Draw ``data_sample``'s predictions (ground truth is not drawn) on ``image`` and save the
        picture to ``out_file``, or else hand it to the visualizer's backends as ``name``."""
        if draw_gt:
            raise NotImplementedError("VisionLLMVisualizer draws predictions only (draw_gt=False)")
        picture = self.draw_data_sample(image, data_sample, pred_score_thr) if draw_pred else np.asarray(image)
        if show:
            self.show(picture, win_name=name, wait_time=wait_time)
        if out_file is not None:
            _save(picture, out_file)
        else:
            self.add_image(name, picture, step)


def draw_result(image: np.ndarray, result, out_file: str, score_threshold: float = 0.3) -> str:
    """Draw ``result`` (a ``VisionLLMResult``) on the RGB ``image`` and save it as ``out_file``
    (:meth:`VisionLLMVisualizer.draw_result`, for callers without a visualizer instance)."""
    visualizer = VisionLLMVisualizer.get_instance("visionllm_draw_result")
    return _save(visualizer.draw_result(image, result, score_threshold), out_file)


def _sample_regions(sample: dict):
    """The boxes a sample's picture marks as regions, in ``ori_shape`` pixels, and their names:
    the instruction's input regions (the pipeline's resize scaled them by ``scale_factor``;
    unnamed), or else the boxes a composed answer grounded (``grounded_boxes``, kept in original
    pixels, named by ``grounded_names``); ``(None, None)`` when there are neither."""
    if sample.get("regions") is not None and len(sample["regions"]):
        sx, sy = sample.get("scale_factor", (1.0, 1.0))[:2]
        return _as_numpy(sample["regions"]).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32), None
    if sample.get("grounded_boxes") is not None:
        names = sample.get("grounded_names")
        return np.asarray(sample["grounded_boxes"], np.float32).reshape(-1, 4), None if names is None else list(names)
    return None, None


def _single_instance(task) -> bool:
    """Whether a task's answer is one object, drawn whatever its score (its spec says)."""
    from visionllm.tasks import get_task, task_names

    return task in task_names() and get_task(task).single_instance
