"""Accuracy of short answers about regions: region question answering and region classification."""
import re
from collections import defaultdict
from typing import Dict, List, Optional

from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .table import print_table
from .utils import dump_json, samples_of_task
from .vqa_metric import normalize_answer

_COLOUR = re.compile(r"\bcolou?r\b", re.IGNORECASE)
_SHAPE = re.compile(r"\b(shape|kind)\b", re.IGNORECASE)
_RELATION = re.compile(r"\b(left|right|above|below)\b", re.IGNORECASE)


def answer_right(prediction: str, gt_answers) -> bool:
    """The prediction equals one of the answers after the VQA normalisation (punctuation, case,
    articles, number words)."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in gt_answers)


def question_kind(question: Optional[str]) -> str:
    """``colour``, ``shape``, ``relation`` or ``other``: what a region question asks about."""
    text = question or ""
    if _COLOUR.search(text):
        return "colour"
    if _SHAPE.search(text):
        return "shape"
    return "relation" if _RELATION.search(text) else "other"


class RegionAnswerAccuracy(BaseMetric):
    """Percent of samples whose ``pred_text`` is right (:func:`answer_right` against
    ``gt_texts``); subclasses name the task, the table and an optional breakdown."""

    default_prefix = ""
    title = "Region answers"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = None,
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix
        self.task = task if task is not None else self.default_prefix

    def group(self, sample: dict) -> Optional[str]:
        """The breakdown column of a sample (None: no breakdown)."""
        return None

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            gts = list(sample.get("gt_texts") or [])
            if gts:
                answer = sample.get("pred_text") or ""
                self.results.append(dict(question_id=sample.get("question_id"), ann_id=sample.get("ann_id"),
                                         answer=answer, right=answer_right(answer, gts), group=self.group(sample)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if self.outfile_prefix:
            dump_json([dict(question_id=r["question_id"], ann_id=r["ann_id"], answer=r["answer"]) for r in results],
                      f"{self.outfile_prefix}.{self.default_prefix}.json")
        metrics = {"accuracy": 100.0 * sum(r["right"] for r in results) / len(results) if results else 0.0}
        groups = defaultdict(list)
        for r in results:
            if r["group"] is not None:
                groups[r["group"]].append(r["right"])
        for name in sorted(groups):
            metrics[f"{name}_accuracy"] = 100.0 * sum(groups[name]) / len(groups[name])
        header = ["accuracy"] + [f"{name} ({len(groups[name])})" for name in sorted(groups)]
        print_table(f"{self.title} ({len(results)} samples; exact answer after normalisation, percent)", header,
                    [list(metrics.values())])
        return metrics


@METRICS.register_module()
class RegionVQAAccuracy(RegionAnswerAccuracy):
    """Region question answering: accuracy overall and per question kind (colour, shape,
    relation). Dumps ``<outfile_prefix>.region_vqa.json``: ``[{question_id, ann_id, answer}]``."""

    default_prefix = "region_vqa"
    title = "Region question answering"

    def group(self, sample: dict) -> Optional[str]:
        return question_kind(sample.get("question"))


@METRICS.register_module()
class RegionClassificationAccuracy(RegionAnswerAccuracy):
    """Region classification: the named category is the object's. Dumps
    ``<outfile_prefix>.region_classification.json``."""

    default_prefix = "region_classification"
    title = "Region classification"
