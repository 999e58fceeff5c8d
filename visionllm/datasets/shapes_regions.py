"""Region samples derived from the shapes annotations (``tools/make_shapes.py``): one object's box
is the ``<region>`` of a description, of questions and of a classification among names."""
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.dataset import BaseDataset

from visionllm.instructions.regions import REGION_PLACEHOLDER as R
from visionllm.registry import DATASETS

from .base import BadAnnotations, join_root, load_annotation, sentences_of, xywh_box_problem

REGION_TASKS = ("region_caption", "region_vqa", "region_classification")
# Positions the referring expressions state; a description keeps one when the object has it.
_POSITIONS = (" on the left", " on the right", " at the top", " at the bottom")
# The relation a question asks → (axis, sign of the first centre minus the second when it holds).
RELATIONS = {f"is {R} left of {R}?": (0, -1), f"is {R} to the right of {R}?": (0, 1),
             f"is {R} above {R}?": (1, -1), f"is {R} below {R}?": (1, 1)}
_QUESTION_OF = {relation: question for question, relation in RELATIONS.items()}
COLOUR_QUESTIONS = (f"what colour is {R}?", f"what color is {R}?", f"what is the colour of {R}?")
SHAPE_QUESTIONS = (f"what shape is {R}?", f"what kind of shape is {R}?", f"which shape is {R}?")


def relation_of(box_a: Sequence[float], box_b: Sequence[float], axis: int, margin: float) -> int:
    """-1 when ``box_a``'s centre lies more than ``margin`` pixels before ``box_b``'s along ``axis``
    (0: x, left of; 1: y, above), 1 when more than ``margin`` after it, 0 otherwise."""
    delta = (box_a[axis] + box_a[axis + 2]) / 2 - (box_b[axis] + box_b[axis + 2]) / 2
    return -1 if delta < -margin else (1 if delta > margin else 0)


def describe(kind: str, colour: str, size: str, expressions: Sequence[str]) -> str:
    """``the {size} {colour} {kind}``, with the position one of the object's expressions states."""
    text = f"the {size} {colour} {kind}" if size else f"the {colour} {kind}"
    for expression in expressions:
        for position in _POSITIONS:
            if expression.endswith(position):
                return text + position
    return text


@DATASETS.register_module()
class ShapesRegionDataset(BaseDataset):
    """Region samples of the shapes data, one kind per ``task`` (``REGION_TASKS``).

    Per object (its box, xyxy in original pixels, is ``regions[0]``):
    - ``region_caption``: one sample; ``gt_texts`` = its description (size, colour, kind and a
      position from its referring expressions) followed by those expressions (refs file).
    - ``region_vqa``: a colour and a shape question, and a relation question with a second
      object ("is <region> left of <region>?", right of / above / below; centres at least
      ``relation_margin`` × the image side apart): answers alternate yes / no over the dataset,
      a "no" asking the opposite of a true relation.
    - ``region_classification``: the true kind among ``1 .. max_candidates - 1`` other category
      names, shuffled (``region_categories``).
    Every choice is made by a generator seeded with ``seed`` and the annotation id (and the
    yes / no alternation follows the file's order), so the same files give the same samples.

    data_info: ``img_path, img_id, height, width, task, ann_id, regions`` (float32-able [R, 4]),
    ``gt_texts``, ``instances`` (every object's box, label -1: they supervise where the image
    tokens sit); ``question, question_id, target_text`` (region_vqa), ``region_categories,
    target_text`` (region_classification).
    """

    def __init__(self, *args, task: str = "region_caption", refs_file: str = "", seed: int = 0,
                 max_candidates: int = 4, relation_margin: float = 0.08, check_image_files: bool = True, **kwargs):
        if task not in REGION_TASKS:
            raise ValueError(f"task must be one of {REGION_TASKS}, got {task!r}")
        if max_candidates < 2:
            raise ValueError(f"max_candidates must be at least 2, got {max_candidates}")
        self.task = task
        self.refs_file = join_root(kwargs.get("data_root"), refs_file)
        self.seed = seed
        self.max_candidates = max_candidates
        self.relation_margin = relation_margin
        self.check_image_files = check_image_files
        super().__init__(*args, **kwargs)

    def _expressions(self) -> Dict[int, List[str]]:
        if not self.refs_file:
            return {}
        result: Dict[int, List[str]] = {}
        for ref in load_annotation(self.refs_file):
            result.setdefault(ref.get("ann_id"), []).extend(sentences_of(ref))
        return result

    def load_data_list(self) -> List[dict]:
        coco = load_annotation(self.ann_file)
        names = {c["id"]: c["name"] for c in coco.get("categories", [])}
        expressions = self._expressions()
        bad = BadAnnotations(f"{type(self).__name__}({self.ann_file}, {self.task})")
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        objects: Dict[int, List[dict]] = {}
        for ann in coco.get("annotations", []):
            objects.setdefault(ann["image_id"], []).append(ann)
        data_list, counter = [], dict(question_id=0, relation=0)
        for img in coco.get("images", []):
            path = os.path.join(prefix, img["file_name"])
            if self.check_image_files and not os.path.isfile(path):
                bad.skip("missing image file", example=path)
                continue
            usable = []
            for ann in objects.get(img["id"], []):
                problem, box = xywh_box_problem(ann.get("bbox"), img.get("width"), img.get("height"))
                colour = (ann.get("attributes") or {}).get("colour")
                if problem or ann.get("category_id") not in names or not colour:
                    bad.skip(problem or "object without category or colour", example=ann.get("id"))
                    continue
                usable.append(dict(ann=ann, box=box, kind=names[ann["category_id"]], colour=colour,
                                   size=(ann.get("attributes") or {}).get("size", "")))
            image_boxes = [dict(bbox=o["box"], bbox_label=-1, ignore_flag=0) for o in usable]
            common = dict(img_path=path, img_id=img["id"], height=img["height"], width=img["width"], task=self.task,
                          instances=image_boxes)
            for obj in usable:
                rng = random.Random(f"{self.seed}-{obj['ann']['id']}")
                for sample in self._samples(obj, usable, img, expressions, rng, counter, sorted(names.values())):
                    data_list.append(dict(common, ann_id=obj["ann"]["id"], **sample))
        bad.report()
        self.num_bad_annotations = bad.total
        self.bad_annotations = bad
        return data_list

    def _samples(self, obj: dict, others: List[dict], img: dict, expressions: Dict[int, List[str]],
                 rng: random.Random, counter: dict, category_names: List[str]) -> List[dict]:
        """The samples of one object for this dataset's task."""
        box = obj["box"]
        if self.task == "region_caption":
            refs = expressions.get(obj["ann"]["id"], [])
            texts = [describe(obj["kind"], obj["colour"], obj["size"], refs)] + refs
            return [dict(regions=[box], gt_texts=list(dict.fromkeys(texts)))]
        if self.task == "region_classification":
            negatives = [n for n in category_names if n != obj["kind"]]
            count = rng.randint(1, min(self.max_candidates - 1, len(negatives))) if negatives else 0
            candidates = rng.sample(negatives, count) + [obj["kind"]]
            rng.shuffle(candidates)
            return [dict(regions=[box], region_categories=candidates, gt_texts=[obj["kind"]], target_text=obj["kind"])]
        pairs = [(rng.choice(COLOUR_QUESTIONS), [box], obj["colour"]), (rng.choice(SHAPE_QUESTIONS), [box], obj["kind"])]
        relation = self._relation_question(obj, others, img, rng, answer_yes=counter["relation"] % 2 == 0)
        if relation is not None:
            counter["relation"] += 1
            pairs.append(relation)
        samples = []
        for question, regions, answer in pairs:
            counter["question_id"] += 1
            samples.append(dict(regions=regions, question=question, question_id=counter["question_id"],
                                gt_texts=[answer], target_text=answer))
        return samples

    def _relation_question(self, obj: dict, others: List[dict], img: dict, rng: random.Random,
                           answer_yes: bool) -> Optional[Tuple[str, list, str]]:
        """A left / right / above / below question about ``obj`` and another object whose centres
        are clearly apart, answered ``yes`` or ``no`` as asked; None without such an object."""
        options = []
        for other in others:
            if other is obj:
                continue
            for axis, side in ((0, img["width"]), (1, img["height"])):
                sign = relation_of(obj["box"], other["box"], axis, self.relation_margin * side)
                if sign:
                    options.append((other, axis, sign))
        if not options:
            return None
        other, axis, sign = rng.choice(options)
        question = _QUESTION_OF[(axis, sign if answer_yes else -sign)]
        return question, [obj["box"], other["box"]], "yes" if answer_yes else "no"
