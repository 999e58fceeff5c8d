"""The embedded shapes dataset: exact polygons, consistent text, determinism."""
import hashlib
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from visionllm.datasets.shapes import build_split


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    seed = int(np.random.randint(1000))
    return out, seed, build_split("val", 16, seed, str(out), record_masks=True)


def test_polygons_rasterise_to_drawn_pixels(shapes):
    out, _, result = shapes
    coco = COCO(str(out / "annotations" / "instances_val.json"))
    assert len(coco.getAnnIds()) == len(result["masks"]) > 16
    for ann_id, drawn in result["masks"].items():
        ann = coco.anns[ann_id]
        assert np.array_equal(coco.annToMask(ann).astype(bool), drawn)
        assert ann["area"] == drawn.sum()
        x, y, w, h = ann["bbox"]
        rows, cols = np.nonzero(drawn)
        assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    # Visible parts of different objects never share a pixel.
    for img_id in coco.getImgIds():
        masks = [result["masks"][a] for a in coco.getAnnIds(imgIds=img_id)]
        assert np.sum(masks, axis=0).max() <= 1


def test_image_pixels_carry_object_colours(shapes):
    from PIL import Image
    from visionllm.datasets.shapes import COLOURS
    out, _, result = shapes
    coco = COCO(str(out / "annotations" / "instances_val.json"))
    for img in coco.dataset["images"][:4]:
        pixels = np.asarray(Image.open(out / "images" / "val" / img["file_name"]))
        assert pixels.shape == (img["height"], img["width"], 3)
        for ann in coco.imgToAnns[img["id"]]:
            mean = pixels[result["masks"][ann["id"]]].mean(axis=0)
            assert np.abs(mean - np.asarray(COLOURS[ann["attributes"]["colour"]])).max() < 12


def test_text_annotations_are_consistent(shapes):
    out, _, result = shapes
    instances = result["instances"]
    anns = {a["id"]: a for a in instances["annotations"]}
    names = {c["id"]: c["name"] for c in instances["categories"]}
    assert result["refs"]
    for ref in result["refs"]:
        target = anns[ref["ann_id"]]
        assert target["image_id"] == ref["image_id"]
        same_image = [a for a in anns.values() if a["image_id"] == ref["image_id"]]
        for sentence in ref["sentences"]:
            words = sentence["sent"].split()
            # "the <colour> <kind>" must single the object out.
            if len(words) == 3 and words[1] in ("red", "green", "blue", "yellow", "purple", "orange", "white"):
                matches = [a for a in same_image if a["attributes"]["colour"] == words[1]
                           and names[a["category_id"]] == words[2]]
                assert matches == [target]
    caps = json.load(open(out / "annotations" / "captions_val.json"))
    assert {a["image_id"] for a in caps["annotations"]} == {i["id"] for i in instances["images"]}
    questions = json.load(open(out / "annotations" / "vqa_questions_val.json"))["questions"]
    answers = {a["question_id"]: a for a in json.load(open(out / "annotations" / "vqa_annotations_val.json"))["annotations"]}
    kinds_per_image = {}
    for a in instances["annotations"]:
        kinds_per_image.setdefault(a["image_id"], []).append(names[a["category_id"]])
    checked = 0
    for q in questions:
        assert len(answers[q["question_id"]]["answers"]) == 10
        if q["question"].startswith("how many") and q["question"].split()[2] != "shapes" and "shapes" not in q["question"]:
            kind = q["question"].split()[2][:-1]
            expected = kinds_per_image.get(q["image_id"], []).count(kind)
            assert answers[q["question_id"]]["multiple_choice_answer"] == str(expected)
            checked += 1
    assert checked == len(instances["images"])


def test_deterministic_by_seed(tmp_path, shapes):
    _, seed, _ = shapes
    build_split("train", 5, seed, str(tmp_path / "a"))
    build_split("train", 5, seed, str(tmp_path / "b"), workers=2)
    build_split("train", 5, seed + 1, str(tmp_path / "c"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_tool_writes_layout(tmp_path):
    from tools.make_shapes import main
    main(["--out", str(tmp_path), "--num-train", "3", "--num-val", "2", "--workers", "1"])
    for split, n in (("train", 3), ("val", 2)):
        assert len(os.listdir(tmp_path / "images" / split)) == n
        for key in ("instances", "refs", "captions", "vqa_questions", "vqa_annotations"):
            assert (tmp_path / "annotations" / f"{key}_{split}.json").is_file()
