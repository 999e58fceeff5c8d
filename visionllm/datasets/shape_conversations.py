"""Multi-turn conversations about shapes images, made from their instance annotations.

Every image gets one conversation of two or three turns whose later turns refer back ("them",
"it", "then"), so they can only be answered with the earlier turns in the prompt. Each turn also
has a standalone form that names everything itself ("How many red stars are there?"); asked as
single turns (``standalone=True``) the same questions measure what the conversation costs or
adds. Answers are computed from the annotations: kinds, ``attributes.colour`` and
``attributes.size``, and box centres for left / right.
"""
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset

from visionllm.registry import DATASETS
from visionllm.utils.english import article, plural

from .base import load_annotation

# A side is named only when the object's centre is this far (share of the width) from the middle.
SIDE_MARGIN = 0.1


@dataclass(frozen=True)
class _Object:
    kind: str
    colour: str
    size: str
    cx: float


Turn = Tuple[str, str, str]  # (question in the conversation, standalone question, answer)


def _count_chain(objects: Sequence[_Object], rng: np.random.Generator, kinds, colours) -> List[Turn]:
    kind = kinds[int(rng.integers(len(kinds)))] if rng.random() < 0.3 or not objects else \
        objects[int(rng.integers(len(objects)))].kind
    of_kind = [o for o in objects if o.kind == kind]
    turns = [(f"How many {plural(kind)} are there?",) * 2 + (str(len(of_kind)),)]
    present = sorted({o.colour for o in of_kind})
    colour = present[int(rng.integers(len(present)))] if present and rng.random() < 0.6 else \
        colours[int(rng.integers(len(colours)))]
    turns.append((f"And how many of them are {colour}?", f"How many {colour} {plural(kind)} are there?",
                  str(sum(o.colour == colour for o in of_kind))))
    if rng.random() < 0.5:
        other = [c for c in colours if c != colour]
        colour = other[int(rng.integers(len(other)))]
        turns.append((f"What about {colour} ones?", f"How many {colour} {plural(kind)} are there?",
                       str(sum(o.colour == colour for o in of_kind))))
    return turns


def _object_chain(objects: Sequence[_Object], rng: np.random.Generator, width: int) -> List[Turn]:
    """About one object named uniquely by colour and kind: is it there, its size, its side."""
    unique = [o for o in objects if sum(p.kind == o.kind and p.colour == o.colour for p in objects) == 1]
    if not unique:
        return []
    o = unique[int(rng.integers(len(unique)))]
    name = f"{o.colour} {o.kind}"
    turns = [(f"Is there {article(name)} {name}?",) * 2 + ("yes",),
             ("What size is it?", f"What size is the {name}?", o.size)]
    if abs(o.cx / width - 0.5) > SIDE_MARGIN:
        turns.append(("Is it on the left or on the right?", f"Is the {name} on the left or on the right?",
                      "left" if o.cx < width / 2 else "right"))
    return turns


def _kind_chain(objects: Sequence[_Object], rng: np.random.Generator, kinds) -> List[Turn]:
    """Is there a kind; yes: its colour (when it is the only one), no: how many shapes then."""
    present = sorted({o.kind for o in objects})
    absent = [k for k in kinds if k not in present]
    if present and (rng.random() < 0.5 or not absent):
        kind = present[int(rng.integers(len(present)))]
        same = [o for o in objects if o.kind == kind]
        turns = [(f"Is there {article(kind)} {kind}?",) * 2 + ("yes",)]
        if len(same) == 1:
            turns.append(("What colour is it?", f"What colour is the {kind}?", same[0].colour))
        else:
            turns.append(("How many of them are there?", f"How many {plural(kind)} are there?", str(len(same))))
        return turns
    kind = absent[int(rng.integers(len(absent)))]
    return [(f"Is there {article(kind)} {kind}?",) * 2 + ("no",),
            ("How many shapes are there, then?", "How many shapes are there?", str(len(objects)))]


def conversation(objects: Sequence[_Object], width: int, rng: np.random.Generator,
                 kinds: Sequence[str], colours: Sequence[str]) -> List[Turn]:
    """One conversation about an image: a chain of turns picked at random (2 or 3 turns)."""
    chains = [lambda: _count_chain(objects, rng, kinds, colours), lambda: _object_chain(objects, rng, width),
              lambda: _kind_chain(objects, rng, kinds)]
    for index in rng.permutation(len(chains)):
        turns = chains[int(index)]()
        if turns:
            return turns
    return []


@DATASETS.register_module()
class ShapesConversationDataset(BaseDataset):
    """VQA samples of shapes conversations (task ``'vqa'``), one per turn, with the earlier
    turns as ``history`` (the first user turn shows ``<image>``; only the current answer is a
    target). ``standalone=True`` asks each turn's standalone question as a single turn instead.
    Deterministic per image and ``seed``.

    Args:
        ann_file: the shapes COCO instances json (``annotations/instances_{split}.json``).
        seed: the conversations' seed (the same seed gives the same conversations).
        standalone: single-turn samples of the standalone questions.

    data_info: ``img_path, img_id, task='vqa', question, target_text, gt_texts (the answer ten times,
    as ten agreeing annotators: the VQAv2 accuracy rule needs three matches for full credit),
    question_id ("<image id>_<turn>"), turn (1-based), history``.
    """

    METAINFO = dict(task="vqa")

    def __init__(self, *args, seed: int = 0, standalone: bool = False, **kwargs):
        self.seed = seed
        self.standalone = standalone
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        coco = load_annotation(self.ann_file)
        kinds = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        kind_of = {c["id"]: c["name"] for c in coco["categories"]}
        by_image = {}
        for ann in coco["annotations"]:
            x, _, w, _ = ann["bbox"]
            attributes = ann.get("attributes") or {}
            by_image.setdefault(ann["image_id"], []).append(
                _Object(kind_of[ann["category_id"]], attributes.get("colour", ""), attributes.get("size", ""), x + w / 2))
        colours = sorted({o.colour for objects in by_image.values() for o in objects if o.colour})
        prefix = self.data_prefix.get("img_path", self.data_prefix.get("img", ""))
        data_list = []
        for image in coco["images"]:
            rng = np.random.default_rng([self.seed, image["id"]])
            turns = conversation(by_image.get(image["id"], []), image["width"], rng, kinds, colours)
            history = []
            for index, (question, standalone, answer) in enumerate(turns, start=1):
                asked = standalone if self.standalone else question
                data_list.append(dict(img_path=os.path.join(prefix, image["file_name"]), img_id=image["id"],
                                      task="vqa", question=asked, target_text=answer, gt_texts=[answer] * 10,
                                      question_id=f"{image['id']}_{index}", turn=index,
                                      history=[] if self.standalone else list(history)))
                history.append(dict(user=f"<image> {question}" if index == 1 else question, assistant=answer))
        return data_list
