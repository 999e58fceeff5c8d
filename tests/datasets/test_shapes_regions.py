"""ShapesRegionDataset: region samples whose boxes, answers and references follow from the shapes
annotations (recomputed here from the annotation files, not from the reader's helpers)."""
import json
import re

import numpy as np
import pytest

from visionllm.datasets import ShapesRegionDataset
from visionllm.datasets.shapes import build_split


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("region_shapes")
    build_split("val", 24, 5, str(root), image_size=(64, 96), max_objects=4)
    coco = json.loads((root / "annotations" / "instances_val.json").read_text())
    refs = json.loads((root / "annotations" / "refs_val.json").read_text())
    return root, coco, refs


def _dataset(root, task, **kwargs):
    return ShapesRegionDataset(task=task, data_root=str(root), ann_file="annotations/instances_val.json",
                               refs_file="annotations/refs_val.json", data_prefix=dict(img_path="images/val/"),
                               **kwargs)


def _centre(box, axis):
    return (box[axis] + box[axis + 2]) / 2


@pytest.mark.parametrize("task", ["region_caption", "region_vqa", "region_classification"])
def test_regions_are_object_boxes_inside_the_image(shapes, task):
    root, coco, _ = shapes
    anns = {a["id"]: a for a in coco["annotations"]}
    data = _dataset(root, task)
    assert len(data) >= len(anns)
    for i in range(len(data)):
        info = data.get_data_info(i)
        assert info["task"] == task
        regions = np.asarray(info["regions"], np.float32)
        assert regions.shape[1] == 4 and len(regions) == info.get("question", "<region>").count("<region>")
        assert (regions[:, 0] >= 0).all() and (regions[:, 2] <= info["width"]).all()
        assert (regions[:, 1] >= 0).all() and (regions[:, 3] <= info["height"]).all()
        assert (regions[:, 2] > regions[:, 0]).all() and (regions[:, 3] > regions[:, 1]).all()
        x, y, w, h = anns[info["ann_id"]]["bbox"]
        np.testing.assert_allclose(regions[0], [x, y, x + w, y + h])  # the first region is the object


def test_answers_follow_the_annotations(shapes):
    root, coco, _ = shapes
    anns = {a["id"]: a for a in coco["annotations"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    data = _dataset(root, "region_vqa")
    kinds, answers = set(), []
    for i in range(len(data)):
        info = data.get_data_info(i)
        ann, question, answer = anns[info["ann_id"]], info["question"], info["target_text"]
        assert info["gt_texts"] == [answer]
        if re.search(r"colou?r", question):
            assert answer == ann["attributes"]["colour"]
            kinds.add("colour")
        elif "shape" in question:
            assert answer == names[ann["category_id"]]
            kinds.add("shape")
        else:
            first, second = info["regions"]
            axis = 0 if re.search(r"\b(left|right)\b", question) else 1
            before = _centre(first, axis) < _centre(second, axis)
            holds = before if re.search(r"\b(left|above)\b", question) else not before
            assert answer == ("yes" if holds else "no"), question
            # clearly apart: at least the margin (8 % of the side) between the centres
            side = info["width"] if axis == 0 else info["height"]
            assert abs(_centre(first, axis) - _centre(second, axis)) > 0.08 * side
            answers.append(answer)
            kinds.add("relation")
    assert kinds == {"colour", "shape", "relation"}
    assert len(answers) >= 10 and abs(answers.count("yes") - answers.count("no")) <= 1


def test_classification_offers_the_true_name_among_others(shapes):
    root, coco, _ = shapes
    anns = {a["id"]: a for a in coco["annotations"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    data = _dataset(root, "region_classification", max_candidates=4)
    sizes = set()
    for i in range(len(data)):
        info = data.get_data_info(i)
        kind = names[anns[info["ann_id"]]["category_id"]]
        candidates = info["region_categories"]
        assert info["target_text"] == kind and kind in candidates
        assert len(set(candidates)) == len(candidates) and set(candidates) <= set(names.values())
        sizes.add(len(candidates))
    assert min(sizes) >= 2 and max(sizes) <= 4 and len(sizes) > 1
    positions = {data.get_data_info(i)["region_categories"].index(data.get_data_info(i)["target_text"])
                 for i in range(len(data))}
    assert len(positions) > 1  # the true name is not always in the same place


def test_caption_references_are_the_description_then_the_expressions(shapes):
    root, coco, refs = shapes
    anns = {a["id"]: a for a in coco["annotations"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    sentences = {r["ann_id"]: [s["sent"] for s in r["sentences"]] for r in refs}
    data = _dataset(root, "region_caption")
    assert len(data) == len(anns)
    for i in range(len(data)):
        info = data.get_data_info(i)
        ann = anns[info["ann_id"]]
        first = info["gt_texts"][0]
        assert first.startswith(f"the {ann['attributes']['size']} {ann['attributes']['colour']} "
                                f"{names[ann['category_id']]}")
        assert info["gt_texts"][1:] == [s for s in sentences.get(ann["id"], []) if s != first]


def test_samples_are_deterministic_and_follow_the_seed(shapes):
    root = shapes[0]
    a, b, c = (_dataset(root, "region_vqa", seed=seed) for seed in (0, 0, 1))
    a, b, c = ([data.get_data_info(i) for i in range(30)] for data in (a, b, c))
    key = lambda infos: [(x["question"], x["target_text"], np.asarray(x["regions"]).tolist()) for x in infos]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)


def test_a_flip_keeps_relation_answers_true(shapes):
    """RandomFlipWithText mirrors the regions and swaps left / right in the question."""
    from visionllm.datasets.transforms import LoadImageRGB, LoadVisionLLMAnnotations, RandomFlipWithText
    root = shapes[0]
    data = _dataset(root, "region_vqa")
    checked = 0
    for i in range(len(data)):
        info = data.get_data_info(i)
        if not re.search(r"\b(left|right)\b", info["question"]):
            continue
        question = info["question"]
        results = RandomFlipWithText(prob=1.0)(LoadVisionLLMAnnotations()(LoadImageRGB()(dict(info))))
        first, second = results["regions"]
        before = _centre(first, 0) < _centre(second, 0)
        holds = before if re.search(r"\bleft\b", results["question"]) else not before
        assert results["target_text"] == ("yes" if holds else "no"), results["question"]
        assert results["question"] != question
        checked += 1
    assert checked >= 3


def test_unknown_task_is_refused(shapes):
    with pytest.raises(ValueError, match="task must be one of"):
        _dataset(shapes[0], "region_detection")
