"""Count questions answered from the model's own detections.

"How many stars are there?" asks what the detector reads far more reliably than the LLM's answer
does. Before such a question is answered, the model detects its ``categories`` (``OwnDetections``:
one detection pass for all count questions of a batch) and counts the detections scoring at least
``score_threshold``: those of the asked kind, or all of them for a hypernym ("how many things are
there?"). With a colour ("how many red shapes are there?") only the detections whose answer to
"what colour is <region>?" is that colour count (one more pass for all those boxes of a batch).
The count, in digits, is the answer; the boxes counted, in pixels of the input image, are kept as
metainfo ``grounded_boxes``. A question about words outside ``categories`` and ``colours`` is
answered as asked; a follow-up in a conversation ("and how many of them are red?" after "how many
stars are there?") is read as the question it stands for (``self_contained_question``).
"""
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

from visionllm.models.own_detections import OwnDetections
from visionllm.models.question_grounding import HYPERNYMS, answer_words, copy_asking, read_rows, region_box
from visionllm.utils.english import plural

_PHRASE = r"([a-z]+(?: [a-z]+)??)"  # lazy: "stars are there" is "stars"
_IMAGE = r"(?:the|this) (?:image|picture|photo)"
_COUNTS = (
    re.compile(rf"\bhow many {_PHRASE}(?: are there| can you see| do you see| are visible| are shown"
               rf"| are in {_IMAGE}| (?:does|do) {_IMAGE} (?:contain|have|show))?(?: in {_IMAGE})?\s*\?",
               re.IGNORECASE),
    re.compile(rf"\bcount the {_PHRASE}(?: in {_IMAGE})?\s*[.?!]?\s*$", re.IGNORECASE),
    re.compile(rf"\bwhat is the number of {_PHRASE}(?: in {_IMAGE})?\s*\?", re.IGNORECASE),
)
COLOUR_QUESTION = "what colour is <region>?"


class CountQuestion(NamedTuple):
    """What a count question counts: things of ``colour`` (None: any colour) and of ``kind``
    (None: any kind, the question names a hypernym)."""
    colour: Optional[str]
    kind: Optional[str]


class QuestionCounting(OwnDetections):
    """Which samples ask for a count, their detection samples, and the count.

    Args:
        categories: the kinds the model detects (e.g. a dataset's classes).
        colours: colour words the model answers "what colour is <region>?" with (counts by
            colour are read only for these; none by default).
        hypernyms: words for any kind ("how many shapes are there?").
        score_threshold: a detection counts when it scores at least this.
        tasks: the tasks whose questions are read (by default VQA).
        overlap_iou: of present detections overlapping by more than this IoU only the best-scoring
            one counts, whatever its kind (None: each kind on its own; ``OwnDetections``).
    """

    def __init__(self, categories: Sequence[str], colours: Sequence[str] = (), hypernyms: Sequence[str] = HYPERNYMS,
                 score_threshold: float = 0.5, tasks: Sequence[str] = ("vqa",),
                 overlap_iou: Optional[float] = None):
        super().__init__(categories, score_threshold, overlap_iou)
        self.colours = tuple(colours)
        self.tasks = tuple(tasks)
        self._nouns = {plural(name): name for name in self.categories}
        self._nouns.update({plural(word): None for word in hypernyms})

    def read(self, question: str) -> Optional[CountQuestion]:
        """What ``question`` counts, or None for a question answered as asked."""
        for pattern in _COUNTS:
            match = pattern.search(question)
            if match is None:
                continue
            *colour, noun = match.group(1).lower().split()
            if noun in self._nouns and (not colour or colour[0] in self.colours):
                return CountQuestion(colour[0] if colour else None, self._nouns[noun])
            return None
        return None

    def rows(self, samples: Sequence) -> List[Tuple[int, CountQuestion]]:
        """``(index, what it counts)`` of each sample whose question asks for a count."""
        return read_rows(samples, self.tasks, self.read)

    def count(self, sample, question: CountQuestion, detected) -> List:
        """Count ``question``'s things among ``detected`` (``sample``'s detection sample after
        prediction) into ``sample``'s metainfo ``composed_answer`` (their boxes: ``grounded_boxes``,
        their kinds: ``grounded_names``);
        with a colour, return one copy of ``sample`` per detection of the asked kind, asking its
        colour (answer them, then :meth:`count_colours`), and count nothing yet."""
        present = self.present(detected)
        kinds = [self.categories[label] for label in present.labels.tolist()]
        found = [(region_box(box), kind) for box, kind in zip(present.bboxes, kinds)
                 if question.kind is None or kind == question.kind]
        boxes = [box for box, _ in found]
        sample.set_metainfo(dict(grounded_boxes=[box.tolist() for box in boxes],
                                 grounded_names=[kind for _, kind in found]))
        if question.colour is None or not boxes:
            sample.set_metainfo(dict(composed_answer=str(len(boxes))))
            return []
        return [copy_asking(sample, COLOUR_QUESTION, [box]) for box in boxes]

    @staticmethod
    def count_colours(sample, question: CountQuestion, answered: Sequence) -> None:
        """Put on ``sample`` (metainfo ``composed_answer``) how many of ``answered`` (the predicted
        copies :meth:`count` returned) are ``question``'s colour, and keep only their boxes (named
        "<colour> <kind>")."""
        right = [answer_words(colour.get("pred_text")) == question.colour for colour in answered]
        counted = [(box, f"{question.colour} {kind}") for box, kind, ok
                   in zip(sample.metainfo["grounded_boxes"], sample.metainfo["grounded_names"], right) if ok]
        sample.set_metainfo(dict(composed_answer=str(len(counted)), grounded_boxes=[box for box, _ in counted],
                                 grounded_names=[name for _, name in counted]))


def build_question_counting(config: Optional[dict]) -> Optional[QuestionCounting]:
    """``QuestionCounting(**config)``, or None for no config."""
    return None if not config else QuestionCounting(**config)
