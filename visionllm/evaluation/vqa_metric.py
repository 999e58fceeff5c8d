"""VQAv2 accuracy: the rule of the official evaluation script (``vqaEval.py`` of the VQA
dataset's evaluation tools) by default, a lenient variant on request.

The official rule, for one question with human answers ``gts`` and a predicted answer:

1. the prediction is always normalised: newlines/tabs → spaces, stripped, punctuation
   processed (:func:`process_punctuation`), then lower-cased with number words → digits,
   articles dropped and apostrophe-less contractions restored (:func:`process_digits_articles`);
2. the human answers are left exactly as written when all of them are identical; otherwise
   each gets the punctuation processing only (no lower-casing, number words or articles: the
   released VQAv2 annotations are already in that normal form);
3. accuracy = the mean over the humans of min(#other humans who gave the prediction / 3, 1),
   i.e. each human answer left out once.

So a prediction "two" scores 1 against ten "2" (the prediction becomes "2") but 0 against ten
"two" (the humans' unanimous "two" is not normalised). ``rule="lenient"`` normalises the
human answers fully as well, always (such a "two" then scores 1).
"""
import re
from typing import Dict, List, Optional, Sequence

from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .table import print_table
from .utils import dump_json, samples_of_task

RULES = ("official", "lenient")

# The marks the official evaluation strips. Apostrophes and colons stay ("it's", "10:30");
# periods are handled separately so decimals survive.
_PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!"
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")  # "2." → "2", "3.5" stays
# The official script passes re.UNICODE (= 32) where ``re.sub`` expects its count argument, so at
# most 32 periods of one answer are removed; kept for identical numbers.
_MAX_PERIODS_REMOVED = int(re.UNICODE)
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}

# The official contraction table (word as typed → replacement), applied to lower-cased words.
# It is not "every contraction without its apostrophe": forms that are ordinary words are absent
# ("shed", "well", "were", "its", "ill", "id", "wed", "hell", "shell"), so "shed" stays "shed";
# "hed" → "he'd" is in it. Its quirks are kept because they change scores: the entries with a
# capital I ("Im", "Ive", "Id've", "I'dve") never match a lower-cased word, "somebody'd" maps to
# "somebodyd", and "she's" / "let's" map to themselves.
_CONTRACTION_PAIRS = """
aint ain't | arent aren't | cant can't | couldve could've | couldnt couldn't | couldn'tve couldn't've
couldnt've couldn't've | didnt didn't | doesnt doesn't | dont don't | hadnt hadn't | hadnt've hadn't've
hadn'tve hadn't've | hasnt hasn't | havent haven't | hed he'd | hed've he'd've | he'dve he'd've | hes he's
howd how'd | howll how'll | hows how's | Id've I'd've | I'dve I'd've | Im I'm | Ive I've | isnt isn't
itd it'd | itd've it'd've | it'dve it'd've | itll it'll | let's let's | maam ma'am | mightnt mightn't
mightnt've mightn't've | mightn'tve mightn't've | mightve might've | mustnt mustn't | mustve must've
neednt needn't | notve not've | oclock o'clock | oughtnt oughtn't | ow's'at 'ow's'at | 'ows'at 'ow's'at
'ow'sat 'ow's'at | shant shan't | shed've she'd've | she'dve she'd've | she's she's | shouldve should've
shouldnt shouldn't | shouldnt've shouldn't've | shouldn'tve shouldn't've | somebody'd somebodyd
somebodyd've somebody'd've | somebody'dve somebody'd've | somebodyll somebody'll | somebodys somebody's
someoned someone'd | someoned've someone'd've | someone'dve someone'd've | someonell someone'll
someones someone's | somethingd something'd | somethingd've something'd've | something'dve something'd've
somethingll something'll | thats that's | thered there'd | thered've there'd've | there'dve there'd've
therere there're | theres there's | theyd they'd | theyd've they'd've | they'dve they'd've | theyll they'll
theyre they're | theyve they've | twas 'twas | wasnt wasn't | wed've we'd've | we'dve we'd've | weve we've
werent weren't | whatll what'll | whatre what're | whats what's | whatve what've | whens when's
whered where'd | wheres where's | whereve where've | whod who'd | whod've who'd've | who'dve who'd've
wholl who'll | whos who's | whove who've | whyll why'll | whyre why're | whys why's | wont won't
wouldve would've | wouldnt wouldn't | wouldnt've wouldn't've | wouldn'tve wouldn't've | yall y'all
yall'll y'all'll | y'allll y'all'll | yall'd've y'all'd've | y'alld've y'all'd've | y'all'dve y'all'd've
youd you'd | youd've you'd've | you'dve you'd've | youll you'll | youre you're | youve you've
"""
CONTRACTIONS: Dict[str, str] = dict(pair.split() for pair in _CONTRACTION_PAIRS.replace("\n", " | ").split("|")
                                    if pair.strip())


def process_punctuation(text: str) -> str:
    """Remove punctuation: a mark next to a space (or any mark, when the text has a comma between
    digits) is deleted, otherwise it becomes a space ("black/white" → "black white"); a period
    survives only when a digit follows it (decimals)."""
    out = text
    comma_in_number = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or comma_in_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_DECIMAL.sub("", out, count=_MAX_PERIODS_REMOVED)


def process_digits_articles(text: str) -> str:
    """Lower-case, number words → digits, drop articles, then the contraction table."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """The full normalisation the official script applies to a predicted answer."""
    return process_digits_articles(process_punctuation(_clean(answer)))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str], rule: str = "official") -> float:
    """Accuracy (0..1) of one predicted answer against the human answers; ``rule`` is
    ``"official"`` (the VQAv2 evaluation script; see the module docstring) or ``"lenient"``
    (human answers always fully normalised too). 0 without human answers."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if not gt_answers:
        return 0.0
    pred = normalize_answer(prediction)
    if rule == "lenient":
        gts = [normalize_answer(a) for a in gt_answers]
    elif len(set(gt_answers)) > 1:
        gts = [process_punctuation(a) for a in gt_answers]
    else:
        gts = list(gt_answers)
    matches = sum(a == pred for a in gts)
    # Leaving out human i: the others agree with the prediction matches - [gts[i] == pred] times.
    accs = [min(1.0, (matches - (a == pred)) / 3.0) for a in gts]
    return sum(accs) / len(accs)


@METRICS.register_module()
class VQAAccuracy(BaseMetric):
    """VQAv2 accuracy (percent) of ``pred_text`` against ``gt_texts`` (the human answers) under
    ``rule`` (``"official"`` by default, or ``"lenient"``). Dumps ``<outfile_prefix>.vqa.json``:
    ``[{question_id, answer}]`` (the answer as predicted). ``group_by``: a metainfo key (e.g.
    ``"turn"`` of conversation samples) whose values also get their own accuracy
    (``accuracy_<key><value>``), one table row each.

    A second table splits the questions whose reference answer (``target_text``, VQAv2's
    multiple-choice answer, else the humans' most common answer) is "yes" or "no"
    (``accuracy_answer_yes`` / ``accuracy_answer_no``: a model that always says "no" scores 100
    and 0), and by VQAv2's ``answer_type`` where the samples carry it (``accuracy_type_yes_no``,
    ``accuracy_type_number``, ``accuracy_type_other``)."""

    default_prefix = "vqa"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "vqa", rule: str = "official",
                 group_by: Optional[str] = None, collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.outfile_prefix = outfile_prefix
        self.task = task
        self.rule = rule
        self.group_by = group_by

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            answer = sample.get("pred_text") or ""
            gts = list(sample.get("gt_texts") or [])
            reference = sample.get("target_text") or (max(gts, key=gts.count) if gts else "")
            self.results.append(dict(question_id=sample.get("question_id"), answer=answer,
                                     accuracy=vqa_accuracy(answer, gts, self.rule) if gts else None,
                                     group=sample.get(self.group_by) if self.group_by else None,
                                     reference=str(reference).strip().lower(), answer_type=sample.get("answer_type")))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if self.outfile_prefix:
            dump_json([dict(question_id=r["question_id"], answer=r["answer"]) for r in results],
                      f"{self.outfile_prefix}.vqa.json")
        scored = [r["accuracy"] for r in results if r["accuracy"] is not None]
        accuracy = 100.0 * sum(scored) / len(scored) if scored else 0.0
        title = f"VQA ({len(results)} questions, {len(scored)} with answers; {self.rule} rule)"
        metrics = {"accuracy": accuracy}
        answered = [r for r in results if r["accuracy"] is not None]
        if not self.group_by:
            print_table(title, ["accuracy"], [[accuracy]])
        else:
            groups = [(f"{self.group_by} {value}", f"{self.group_by}{value}",
                       [r for r in answered if r["group"] == value])
                      for value in sorted({r["group"] for r in answered}, key=str)]
            rows = _subset_accuracies(groups, metrics)
            print_table(title, [self.group_by, "questions", "accuracy"], rows + [["all", len(scored), accuracy]])
        parts = [(f"reference {answer}", f"answer_{answer}", [r for r in answered if r["reference"] == answer])
                 for answer in ("yes", "no")]
        parts += [(f"type {kind}", "type_" + re.sub(r"\W+", "_", kind),
                   [r for r in answered if r["answer_type"] == kind])
                  for kind in sorted({r["answer_type"] for r in answered if r["answer_type"]})]
        rows = _subset_accuracies(parts, metrics)
        if rows:
            print_table("VQA by reference answer and answer type", ["questions", "n", "accuracy"], rows)
        return metrics


def _subset_accuracies(parts, metrics: Dict[str, float]) -> list:
    """For each non-empty ``(label, key, results)``: ``metrics["accuracy_<key>"]`` (percent) and a
    table row ``[label, count, accuracy]``."""
    rows = []
    for label, key, part in parts:
        if part:
            metrics[f"accuracy_{key}"] = 100.0 * sum(r["accuracy"] for r in part) / len(part)
            rows.append([label, len(part), metrics[f"accuracy_{key}"]])
    return rows
