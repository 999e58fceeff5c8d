"""``CanonicalFormMetric``: how well the model understands plain requests (the ``request``
task): its canonical form against the reference, per task the reference asks for."""
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional

from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .table import print_table
from .utils import dump_json, samples_of_task

UNSUPPORTED_ROW = "unsupported"


@dataclass(frozen=True)
class Understanding:
    """A canonical form as read back: task (``"unsupported"``; None when unreadable), form
    (``"structured"``, ``"text"``, ``"unsupported"``, None) and what must match (category
    set, expression or normalised instruction text, output format)."""

    task: Optional[str]
    form: Optional[str]
    key: tuple = ()


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def understand(canonical: str) -> Understanding:
    """Read a canonical form: expanded to its template-0 instruction (``read_canonical``),
    which is then parsed with ``read_instruction`` as any user instruction would be."""
    from visionllm.tasks import CanonicalFormError, InstructionError, get_task, read_canonical, read_instruction

    try:
        expanded = read_canonical(canonical or "")
        if expanded is None:
            return Understanding(UNSUPPORTED_ROW, UNSUPPORTED_ROW)
        parsed = read_instruction(expanded.text)
    except (CanonicalFormError, InstructionError):
        return Understanding(None, None)
    spec = get_task(parsed.task)
    if not spec.structured:  # the question (VQA) is the whole instruction's content
        return Understanding(parsed.task, "text", (_normalised(parsed.text),))
    fields = tuple(parsed.output_format.fields)
    if spec.single_instance:
        return Understanding(parsed.task, "structured", (_normalised(parsed.categories[0]), fields))
    return Understanding(parsed.task, "structured", (frozenset(parsed.categories), fields))


def score_canonical(prediction: str, reference: str) -> Dict[str, object]:
    """``task`` (the reference's row), ``correct`` (same task and same categories as a set /
    expression / question / output format), ``right_form`` (structured vs text vs unsupported
    as the reference) and ``parsed`` (the prediction was readable)."""
    ref, pred = understand(reference), understand(prediction)
    if ref.task is None:
        raise ValueError(f"the reference canonical form {reference!r} cannot be read")
    return dict(task=ref.task, correct=pred.task == ref.task and pred.key == ref.key,
                right_form=pred.form == ref.form, parsed=pred.task is not None)


@METRICS.register_module()
class CanonicalFormMetric(BaseMetric):
    """Canonical-form accuracy of the ``request`` task, per task the reference asks for and
    overall, and the share of requests given the right form of answer; printed as a table.

    Reads each sample's ``pred_text`` and reference ``target_text`` (else ``gt_texts[0]``).
    Metrics: ``accuracy``, ``right_form``, ``parsed`` and ``<task>_accuracy`` per task.
    Dumps ``<outfile_prefix>.request.json``: ``[{image_id, instruction, prediction, reference,
    task, correct, right_form}]``, one per request, to read what the model understood.
    """

    default_prefix = "request"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "request",
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix
        self.task = task

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            reference = sample.get("target_text") or (sample.get("gt_texts") or [None])[0]
            if reference is None:
                continue
            self.results.append(dict(image_id=sample.get("img_id"), instruction=sample.get("instruction"),
                                     prediction=sample.get("pred_text") or "", reference=reference))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        rows: "OrderedDict[str, List[dict]]" = OrderedDict()
        records = []
        for result in results:
            score = score_canonical(result["prediction"], result["reference"])
            rows.setdefault(score["task"], []).append(score)
            records.append(dict(result, task=score["task"], correct=score["correct"], right_form=score["right_form"]))
        if self.outfile_prefix:
            dump_json(records, f"{self.outfile_prefix}.request.json")
        metrics: Dict[str, float] = {}
        table = []
        everything = [s for scores in rows.values() for s in scores]
        for name, scores in list(rows.items()) + [("overall", everything)]:
            n = len(scores)
            accuracy = sum(s["correct"] for s in scores) / max(n, 1)
            right_form = sum(s["right_form"] for s in scores) / max(n, 1)
            parsed = sum(s["parsed"] for s in scores) / max(n, 1)
            table.append([name, n, 100.0 * accuracy, 100.0 * right_form, 100.0 * parsed])
            if name == "overall":
                metrics.update(accuracy=accuracy, right_form=right_form, parsed=parsed)
            else:
                metrics[f"{name}_accuracy"] = accuracy
        print_table("Plain requests: canonical form (%)", ["task", "n", "accuracy", "right form", "parsed"], table)
        return metrics
