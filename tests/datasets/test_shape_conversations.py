"""Shapes conversations: answers recomputed from the annotations, back-references only the
history resolves, standalone forms, and the flip that swaps left / right in the history too."""
import json
import re
from collections import Counter

import numpy as np
import pytest

from visionllm.datasets import ShapesConversationDataset
from visionllm.datasets.shapes import build_split
from visionllm.datasets.transforms import RandomFlipWithText


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    build_split("val", 60, 3, str(root), write_images=False)
    return root


def _dataset(root, **kwargs):
    return ShapesConversationDataset(ann_file=str(root / "annotations" / "instances_val.json"),
                                     data_prefix=dict(img_path=str(root / "images" / "val")), **kwargs)


def _truth(root):
    """Per image: (kind, colour, size, centre x) of every object, read straight from the json."""
    coco = json.loads((root / "annotations" / "instances_val.json").read_text())
    kind = {c["id"]: c["name"] for c in coco["categories"]}
    objects = {img["id"]: [] for img in coco["images"]}
    for a in coco["annotations"]:
        objects[a["image_id"]].append((kind[a["category_id"]], a["attributes"]["colour"], a["attributes"]["size"],
                                       a["bbox"][0] + a["bbox"][2] / 2))
    return objects, {img["id"]: img["width"] for img in coco["images"]}


def _expected(question, objects, width):
    """The answer to a standalone question, worked out from the objects."""
    plural = r"(\w+)s"  # every shape kind's plural adds an s
    if m := re.fullmatch(rf"How many (\w+) {plural} are there\?", question):
        return str(sum(o[1] == m[1] and o[0] == m[2] for o in objects))
    if m := re.fullmatch(rf"How many {plural} are there\?", question):
        return str(len(objects)) if m[1] == "shape" else str(sum(o[0] == m[1] for o in objects))
    if m := re.fullmatch(r"Is there an? (?:(\w+) )?(\w+)\?", question):
        return "yes" if any(o[0] == m[2] and m[1] in (None, o[1]) for o in objects) else "no"
    if m := re.fullmatch(r"What size is the (\w+) (\w+)\?", question):
        (size,) = {o[2] for o in objects if o[:2] == (m[2], m[1])}
        return size
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        (colour,) = [o[1] for o in objects if o[0] == m[1]]
        return colour
    if m := re.fullmatch(r"Is the (\w+) (\w+) on the left or on the right\?", question):
        (cx,) = [o[3] for o in objects if o[:2] == (m[2], m[1])]
        return "left" if cx < width / 2 else "right"
    raise AssertionError(f"unexpected standalone question {question!r}")


def test_every_answer_follows_from_the_annotations(shapes):
    objects, widths = _truth(shapes)
    talk, alone = _dataset(shapes), _dataset(shapes, standalone=True)
    assert len(talk) == len(alone) > 60
    for i in range(len(talk)):
        t, s = talk.get_data_info(i), alone.get_data_info(i)
        assert (t["img_id"], t["turn"], t["target_text"]) == (s["img_id"], s["turn"], s["target_text"])
        assert t["gt_texts"] == [t["target_text"]] * 10  # ten agreeing answers: full VQA credit
        assert t["target_text"] == _expected(s["question"], objects[t["img_id"]], widths[t["img_id"]]), s["question"]
        assert s["history"] == []


def test_later_turns_refer_back_and_carry_the_history(shapes):
    talk = _dataset(shapes)
    samples = [talk.get_data_info(i) for i in range(len(talk))]
    turns = Counter(s["turn"] for s in samples)
    assert turns[1] == 60 and turns[2] == 60 and turns[3] > 0
    for s in samples:
        assert len(s["history"]) == s["turn"] - 1
        if s["history"]:
            assert s["history"][0]["user"].startswith("<image> ")
            assert all("<image>" not in h["user"] for h in s["history"][1:])
            # The follow-up does not say what it is about: only the history does.
            assert re.search(r"\b(them|it|ones|then)\b", s["question"]), s["question"]
    previous = {(s["img_id"], s["turn"]): s for s in samples}
    for s in samples:
        if s["turn"] > 1:
            before = previous[(s["img_id"], s["turn"] - 1)]
            assert s["history"][-1]["assistant"] == before["target_text"]


def test_yes_and_no_both_asked(shapes):
    talk = _dataset(shapes)
    answers = Counter(talk.get_data_info(i)["target_text"] for i in range(len(talk)))
    assert answers["yes"] >= 5 and answers["no"] >= 5


def test_same_seed_same_conversations_other_seed_others(shapes):
    def questions(**kwargs):
        d = _dataset(shapes, **kwargs)
        return [d.get_data_info(i)["question"] for i in range(len(d))]
    assert questions(seed=1) == questions(seed=1) != questions(seed=2)


def test_flip_swaps_left_and_right_in_the_history():
    results = dict(img=np.zeros((10, 20, 3), np.uint8), question="Is it on the left or on the right?",
                   target_text="left", history=[dict(user="<image> Is the red star on the left?", assistant="yes")])
    flipped = RandomFlipWithText(prob=1.0)(results)
    assert flipped["target_text"] == "right"
    assert flipped["history"] == [dict(user="<image> Is the red star on the right?", assistant="yes")]
