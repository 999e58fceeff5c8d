"""VQAv2 accuracy with the official answer normalisation."""
import re
from itertools import combinations
from typing import Dict, List, Optional, Sequence

from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .table import print_table
from .utils import dump_json, samples_of_task

# The marks the official evaluation strips (apostrophes stay: "it's", "don't"); periods are
# handled separately so decimals survive.
_PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!"
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")  # "2." → "2", "3.5" stays
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# Contractions written without their apostrophe, mapped to the spelled form. Forms that are
# ordinary words without the apostrophe ("its", "were", "well", "hell", "shell", "id") are left
# alone, as in the official evaluation.
_CONTRACTIONS_WITH_APOSTROPHE = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't "
    "mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd she'd've she's "
    "should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've "
    "someone'll someone's something'd something'd've something'll that's there'd there'd've there're there's "
    "they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've "
    "when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've").split()
CONTRACTIONS = {c.replace("'", ""): c for c in _CONTRACTIONS_WITH_APOSTROPHE}


def process_punctuation(text: str) -> str:
    """Remove punctuation; a mark touching a space (or a comma between digits) is deleted,
    otherwise it becomes a space ("black/white" → "black white"); a period survives only when
    a digit follows it (decimals)."""
    out = text
    comma_in_number = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or comma_in_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_DECIMAL.sub("", out)


def process_digits_articles(text: str) -> str:
    """Lower-case, number words → digits, drop articles, restore contractions' apostrophes."""
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(answer: str) -> str:
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digits_articles(process_punctuation(answer))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str], strict_official: bool = False) -> float:
    """min(#humans who gave the answer / 3, 1), averaged over the 10-choose-9 subsets of the
    human answers (each answer left out once).

    The official script normalises answers only when the humans disagree; with unanimous
    answers it compares the raw (stripped) strings, so "Two" scores 0 against ten "2".
    ``strict_official=True`` reproduces that; by default both sides are always normalised.
    """
    if not gt_answers:
        return 0.0
    clean = lambda a: a.replace("\n", " ").replace("\t", " ").strip()  # noqa: E731
    if strict_official and len({clean(a) for a in gt_answers}) == 1:
        pred, gts = clean(prediction), [clean(a) for a in gt_answers]
    else:
        pred = normalize_answer(prediction)
        gts = [normalize_answer(a) for a in gt_answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    accs = [min(1.0, sum(a == pred for a in subset) / 3.0) for subset in combinations(gts, len(gts) - 1)]
    return sum(accs) / len(accs)


@METRICS.register_module()
class VQAAccuracy(BaseMetric):
    """VQAv2 accuracy (percent) of ``pred_text`` against ``gt_texts``. Dumps
    ``<outfile_prefix>.vqa.json``: ``[{question_id, answer}]`` (the answer as predicted)."""

    default_prefix = "vqa"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "vqa", strict_official: bool = False,
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix
        self.task = task
        self.strict_official = strict_official

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            answer = sample.get("pred_text") or ""
            gts = list(sample.get("gt_texts") or [])
            self.results.append(dict(question_id=sample.get("question_id"), answer=answer,
                                     accuracy=vqa_accuracy(answer, gts, self.strict_official) if gts else None))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if self.outfile_prefix:
            dump_json([dict(question_id=r["question_id"], answer=r["answer"]) for r in results],
                      f"{self.outfile_prefix}.vqa.json")
        scored = [r["accuracy"] for r in results if r["accuracy"] is not None]
        accuracy = 100.0 * sum(scored) / len(scored) if scored else 0.0
        print_table(f"VQA ({len(results)} questions, {len(scored)} with answers)", ["accuracy"], [[accuracy]])
        return {"accuracy": accuracy}
