"""Image caption metric: BLEU-1..4 and CIDEr-D (in percent, as papers report them)."""
from typing import Dict, Optional

from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .caption_scores import bleu, cider_d
from .table import print_table
from .utils import dump_json, samples_of_task


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """Scores ``pred_text`` against ``gt_texts`` per image (one prediction per image id).
    Dumps ``<outfile_prefix>.caption.json``: ``[{image_id, caption}]``."""

    default_prefix = "caption"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "caption",
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix
        self.task = task

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            self.results.append(dict(image_id=sample.get("img_id"), caption=sample.get("pred_text") or "",
                                     gt_texts=list(sample.get("gt_texts") or [])))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        refs, hyps = {}, {}
        for r in results:  # an image seen twice keeps its first prediction
            if r["image_id"] not in hyps:
                hyps[r["image_id"]] = r["caption"]
                refs[r["image_id"]] = r["gt_texts"]
        if self.outfile_prefix:
            dump_json([dict(image_id=k, caption=v) for k, v in hyps.items()], f"{self.outfile_prefix}.caption.json")
        bleus = bleu(refs, hyps) if hyps else [0.0] * 4
        cider, _ = cider_d(refs, hyps) if hyps else (0.0, {})
        metrics = {f"BLEU-{n + 1}": b * 100 for n, b in enumerate(bleus)}
        metrics["CIDEr"] = cider * 100
        print_table(f"Image captioning ({len(hyps)} images)", list(metrics), [list(metrics.values())])
        return metrics
