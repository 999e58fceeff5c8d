"""Image caption metric (scores in percent, as papers report them).

With Java and ``pycocoevalcap`` present it is the COCO caption toolkit itself (PTB tokenizer,
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), as published numbers are; otherwise our own tokenizer and
BLEU-1..4 / CIDEr-D (``caption_scores``), which give the toolkit's numbers on the same tokens. The
printed table's title names the scorer used; so does ``CaptionMetric.scorer_used``.

With ``ann_file`` (the COCO instances of the same images) the metric also reports object
hallucination in the way of CHAIR and the accuracy of stated counts (``hallucination``).
"""
import warnings
from typing import Dict, Optional, Sequence, Union

from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from visionllm.registry import METRICS

from .caption_scores import bleu, cider_d
from .caption_toolkit import SCORER_NAME, coco_toolkit_scores, toolkit_unavailable
from .hallucination import COCO_SYNONYMS, ObjectVocabulary, hallucination_scores, load_image_objects
from .table import print_table
from .utils import dump_json, samples_of_task

SCORERS = ("auto", "coco", "own")
OWN_SCORER_NAME = "own scorer (PTB-like regex tokenizer, BLEU, CIDEr-D; no METEOR / ROUGE-L)"
# Result names of ``HallucinationScores`` fields (percent; lower is better for all but CountAcc).
HALLUCINATION_NAMES = dict(chair_i="CHAIR_i", chair_s="CHAIR_s", count_accuracy="CountAcc",
                           repeat_share="Repeat_s")


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

    ``ann_file``: COCO instances json (or a list of them) of the same image ids. With it the
    results add ``CHAIR_i`` (hallucinated object mentions / mentions), ``CHAIR_s`` (captions
    with a hallucinated mention / captions), ``CountAcc`` (stated counts that are right / stated
    counts) and ``Repeat_s`` (captions naming one object phrase twice / captions), in percent
    and NaN where there was nothing to score; images missing from the file are left out of
    them. The object vocabulary is the file's category names with plurals and ``synonyms``
    (default: a few COCO ones), and the values of ``attribute_keys`` in the annotations'
    ``attributes`` (the shapes data's colours) as words that qualify a noun
    (see ``visionllm.evaluation.hallucination``).
    """

    default_prefix = "caption"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "caption", scorer: str = "auto",
                 ann_file: Union[str, Sequence[str], None] = None, attribute_keys: Sequence[str] = ("colour", "color"),
                 synonyms: Optional[Dict[str, Sequence[str]]] = None,
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        self.outfile_prefix = outfile_prefix
        self.task = task
        self.scorer = scorer
        self.scorer_used: Optional[str] = None
        self.ann_file = ann_file
        self.attribute_keys = tuple(attribute_keys)
        self.synonyms = COCO_SYNONYMS if synonyms is None else synonyms

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

    def _hallucination(self, hyps: Dict):
        instances, objects = load_image_objects(self.ann_file, self.attribute_keys)
        vocabulary = ObjectVocabulary.from_coco(instances, self.attribute_keys, synonyms=self.synonyms)
        return hallucination_scores(hyps, objects, vocabulary)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        refs, hyps = {}, {}
        for r in results:  # an image seen twice keeps its first prediction
            if r["image_id"] not in hyps:
                hyps[r["image_id"]] = r["caption"]
                refs[r["image_id"]] = r["gt_texts"]
        if self.outfile_prefix:
            dump_json([dict(image_id=k, caption=v) for k, v in hyps.items()], f"{self.outfile_prefix}.caption.json")
        metrics = {name: value * 100 for name, value in self._score(refs, hyps).items()}
        title = f"Image captioning ({len(hyps)} images; {self.scorer_used}"
        if self.ann_file:
            scores = self._hallucination(hyps)
            metrics.update({name: float("nan") if getattr(scores, field) is None else getattr(scores, field) * 100
                            for field, name in HALLUCINATION_NAMES.items()})
            title += (f"; CHAIR on {scores.num_captions} images, {scores.num_mentions} object mentions, "
                      f"{scores.num_counts} stated counts")
        print_table(title + ")", list(metrics), [list(metrics.values())])
        print_log(f"caption metric scored by the {self.scorer_used}", logger="current")
        return metrics
