"""Image caption metric (scores in percent, as papers report them).

With Java and ``pycocoevalcap`` present it is the COCO caption toolkit itself (PTB tokenizer,
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), as published numbers are; otherwise our own tokenizer and
BLEU-1..4 / CIDEr-D (``caption_scores``), which give the toolkit's numbers on the same tokens. The
printed table's title names the scorer used; so does ``CaptionMetric.scorer_used``.
"""
import warnings
from typing import Dict, Optional

from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from visionllm.registry import METRICS

from .caption_scores import bleu, cider_d
from .caption_toolkit import SCORER_NAME, coco_toolkit_scores, toolkit_unavailable
from .table import print_table
from .utils import dump_json, samples_of_task

SCORERS = ("auto", "coco", "own")
OWN_SCORER_NAME = "own scorer (PTB-like regex tokenizer, BLEU, CIDEr-D; no METEOR / ROUGE-L)"


def own_scores(refs: Dict, hyps: Dict) -> Dict[str, float]:
    """BLEU-1..4 and CIDEr (fractions) from ``caption_scores``."""
    bleus = bleu(refs, hyps) if hyps else [0.0] * 4
    scores = {f"BLEU-{n + 1}": b for n, b in enumerate(bleus)}
    scores["CIDEr"] = cider_d(refs, hyps)[0] if hyps else 0.0
    return scores


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """Scores ``pred_text`` against ``gt_texts`` per image (one prediction per image id).
    Dumps ``<outfile_prefix>.caption.json``: ``[{image_id, caption}]``.

    ``scorer``: ``"auto"`` (the COCO toolkit when it can run, else our own, with a warning),
    ``"coco"`` (the toolkit or an error) or ``"own"``.
    """

    default_prefix = "caption"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "caption", scorer: str = "auto",
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        self.outfile_prefix = outfile_prefix
        self.task = task
        self.scorer = scorer
        self.scorer_used: Optional[str] = None

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            self.results.append(dict(image_id=sample.get("img_id"), caption=sample.get("pred_text") or "",
                                     gt_texts=list(sample.get("gt_texts") or [])))

    def _score(self, refs: Dict, hyps: Dict) -> Dict[str, float]:
        reason = toolkit_unavailable() if self.scorer != "own" else "scorer='own' was asked for"
        if reason is None and hyps:
            try:
                scores = coco_toolkit_scores(refs, hyps)
                self.scorer_used = SCORER_NAME
                return scores
            except (OSError, ValueError, RuntimeError) as error:  # java there but not working
                if self.scorer == "coco":
                    raise
                reason = f"the toolkit failed: {error}"
        elif reason is not None and self.scorer == "coco":
            raise RuntimeError(f"CaptionMetric(scorer='coco'): {reason}")
        if reason is not None and self.scorer == "auto":
            warnings.warn(f"caption metric: {reason}; using the own scorer (numbers on other tokens than "
                          "the COCO toolkit's, no METEOR / ROUGE-L)")
        self.scorer_used = OWN_SCORER_NAME
        return own_scores(refs, hyps)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        refs, hyps = {}, {}
        for r in results:  # an image seen twice keeps its first prediction
            if r["image_id"] not in hyps:
                hyps[r["image_id"]] = r["caption"]
                refs[r["image_id"]] = r["gt_texts"]
        if self.outfile_prefix:
            dump_json([dict(image_id=k, caption=v) for k, v in hyps.items()], f"{self.outfile_prefix}.caption.json")
        metrics = {name: value * 100 for name, value in self._score(refs, hyps).items()}
        print_table(f"Image captioning ({len(hyps)} images; {self.scorer_used})", list(metrics),
                    [list(metrics.values())])
        print_log(f"caption metric scored by the {self.scorer_used}", logger="current")
        return metrics
