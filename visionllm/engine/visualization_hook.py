"""``tools/test.py --show-dir``: one picture per predicted sample, drawn by the runner's
:class:`~visionllm.visualization.VisionLLMVisualizer` (the inferencer's drawer)."""
import os.path as osp
from typing import Optional

import numpy as np
from mmengine.hooks import Hook
from PIL import Image

from visionllm.registry import HOOKS


@HOOKS.register_module()
class VisionLLMVisualizationHook(Hook):
    """Writes ``<show_dir>/<task>_<img_id>_<n>.png`` for every test (and val) prediction, on the
    original image (``img_path``), with at most ``max_images`` pictures in all.

    The runner's visualizer draws when it is a ``VisionLLMVisualizer`` (the default runtime's
    ``visualizer``); otherwise the hook builds its own.
    """

    def __init__(self, show_dir: str, score_thr: float = 0.3, max_images: Optional[int] = None):
        self.show_dir = show_dir
        self.score_thr = score_thr
        self.max_images = max_images
        self.count = 0
        self._visualizer = None

    def before_run(self, runner) -> None:
        from visionllm.visualization import VisionLLMVisualizer
        visualizer = getattr(runner, "visualizer", None)
        if not isinstance(visualizer, VisionLLMVisualizer):
            visualizer = VisionLLMVisualizer.get_instance("visionllm_show_dir")
        self._visualizer = visualizer

    def _draw(self, outputs) -> None:
        for sample in outputs or []:
            if self.max_images is not None and self.count >= self.max_images:
                return
            sample = sample.to_dict() if hasattr(sample, "to_dict") else sample
            image = np.asarray(Image.open(sample["img_path"]).convert("RGB"))
            name = f"{sample.get('task')}_{sample.get('img_id')}_{self.count}"
            self._visualizer.add_datasample(name, image, sample, out_file=osp.join(self.show_dir, name + ".png"),
                                            pred_score_thr=self.score_thr)
            self.count += 1

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._draw(outputs)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._draw(outputs)
