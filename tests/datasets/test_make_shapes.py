"""The embedded shapes dataset: exact polygons, consistent text, determinism."""
import hashlib
import json
import os
import re
from collections import Counter

import numpy as np
import pytest
import shapely
from PIL import Image
from pycocotools.coco import COCO
from shapely.geometry import MultiPolygon, Polygon

from visionllm.datasets.shapes import COLOURS, SHAPE_KINDS, build_split
from visionllm.utils.english import NUMBER_WORDS


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
    return out, seed, build_split("val", 24, seed, str(out), record_masks=True)


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


# ----------------------------------------------------------------------------- independent checks
# These read only the written files (PNG and json), never the generator's own masks or objects.
def _load(out):
    coco = COCO(str(out / "annotations" / "instances_val.json"))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    return coco, names


def _box_centre(ann):
    x, y, w, h = ann["bbox"]
    return x + w / 2, y + h / 2


def _polygon_pixels(segmentation, height, width):
    """Pixels whose centre lies inside the polygon(s): a rasteriser independent of pycocotools'."""
    ys, xs = np.mgrid[0:height, 0:width]
    inside = np.zeros((height, width), dtype=bool)
    for flat in segmentation:
        inside |= shapely.contains_xy(Polygon(np.asarray(flat).reshape(-1, 2)), xs + 0.5, ys + 0.5)
    return inside


def test_annotations_match_the_colours_in_the_saved_png(shapes):
    """Decode each PNG and classify its pixels by the nearest named colour. Shapes are painted
    with hard edges (no anti-aliasing) in their colour plus per-pixel noise (std 6 per channel);
    the background is muted (never within ~25 of a named colour). Later shapes occlude earlier
    ones and each annotation is the visible part, so annotations of one image do not overlap."""
    out, _, _ = shapes
    coco, _ = _load(out)
    names = list(COLOURS)
    palette = np.asarray([COLOURS[n] for n in names], dtype=np.float64)
    for img in coco.dataset["images"]:
        pixels = np.asarray(Image.open(out / "images" / "val" / img["file_name"]).convert("RGB"), dtype=np.float64)
        assert pixels.shape == (img["height"], img["width"], 3)
        distance = np.linalg.norm(pixels[:, :, None, :] - palette, axis=-1)
        nearest, nearest_distance = distance.argmin(-1), distance.min(-1)
        anns = coco.imgToAnns[img["id"]]
        for ann in anns:
            colour = names.index(ann["attributes"]["colour"])
            of_colour = (nearest == colour) & (nearest_distance < 30)
            # Inside the polygon (pixel-centre rule: boundary pixels may differ from the
            # pycocotools raster the generator paints), the pixels have the object's colour...
            inside = _polygon_pixels(ann["segmentation"], img["height"], img["width"])
            assert inside.sum() > 0 and of_colour[inside].mean() > 0.85, (img["file_name"], ann["id"])
            # ... and so do the pixels of the annotation's own mask, all but the noise tail.
            mask = coco.annToMask(ann).astype(bool)
            assert of_colour[mask].mean() > 0.97, (img["file_name"], ann["id"])
        # Every clearly coloured pixel is covered by an annotation of that colour.
        for colour, name in enumerate(names):
            drawn = (nearest == colour) & (nearest_distance < 18)
            covered = np.zeros_like(drawn)
            for ann in anns:
                if ann["attributes"]["colour"] == name:
                    covered |= coco.annToMask(ann).astype(bool)
            assert (drawn & ~covered).sum() <= 0.005 * drawn.sum(), (img["file_name"], name)
        polygons = [MultiPolygon([Polygon(np.asarray(part).reshape(-1, 2)) for part in a["segmentation"]]) for a in anns]
        for i, a in enumerate(polygons):
            for b in polygons[i + 1:]:
                assert a.intersection(b).area < 0.5


_COLOUR_WORDS = "|".join(COLOURS)
_KIND_WORDS = "|".join(SHAPE_KINDS)
_REF = re.compile(rf"^the (?:(big|small|leftmost|rightmost) )?(?:({_COLOUR_WORDS}) )?({_KIND_WORDS})"
                  r"(?: (on the left|on the right|at the top|at the bottom))?$")


def test_referring_expressions_single_out_their_object_by_box_centres(shapes):
    out, _, result = shapes
    coco, names = _load(out)
    checked = {"unique": 0, "position": 0}
    for ref in result["refs"]:
        target = coco.anns[ref["ann_id"]]
        assert target["image_id"] == ref["image_id"]
        for sentence in ref["sentences"]:
            match = _REF.match(sentence["sent"])
            assert match, sentence["sent"]
            modifier, colour, kind, place = match.groups()
            assert names[target["category_id"]] == kind and colour in (None, target["attributes"]["colour"])
            group = [a for a in coco.imgToAnns[ref["image_id"]] if names[a["category_id"]] == kind
                     and colour in (None, a["attributes"]["colour"])]
            others = [a for a in group if a["id"] != target["id"]]
            direction = {"leftmost": "on the left", "rightmost": "on the right"}.get(modifier, place)
            if direction is None and modifier is None:
                assert others == [], sentence["sent"]  # "the (colour) kind" is unique
                checked["unique"] += 1
            if direction is not None:
                axis, sign = {"on the left": (0, -1), "on the right": (0, 1), "at the top": (1, -1),
                              "at the bottom": (1, 1)}[direction]
                assert others, sentence["sent"]
                for other in others:
                    assert sign * (_box_centre(target)[axis] - _box_centre(other)[axis]) > 0, sentence["sent"]
                checked["position"] += 1
    assert checked["unique"] > 0 and checked["position"] > 0


def test_vqa_answers_follow_the_instances(shapes):
    out, _, _ = shapes
    coco, names = _load(out)
    questions = json.load(open(out / "annotations" / "vqa_questions_val.json"))["questions"]
    answers = {a["question_id"]: a for a in json.load(open(out / "annotations" / "vqa_annotations_val.json"))["annotations"]}
    plural = {f"{k}s": k for k in SHAPE_KINDS}
    checked = Counter()
    for q in questions:
        record = answers[q["question_id"]]
        answer = record["multiple_choice_answer"]
        assert [a["answer"] for a in record["answers"]] == [answer] * 10
        anns = coco.imgToAnns[q["image_id"]]
        width = coco.imgs[q["image_id"]]["width"]
        text = q["question"]
        if m := re.fullmatch(r"how many (\w+) are there\?", text):
            assert m.group(1) in plural
            expected = str(sum(names[a["category_id"]] == plural[m.group(1)] for a in anns))
        elif m := re.fullmatch(rf"how many ({_COLOUR_WORDS}) shapes are there\?", text):
            expected = str(sum(a["attributes"]["colour"] == m.group(1) for a in anns))
        elif m := re.fullmatch(rf"what color is the ({_KIND_WORDS})\?", text):
            (obj,) = [a for a in anns if names[a["category_id"]] == m.group(1)]
            expected = obj["attributes"]["colour"]
        elif m := re.fullmatch(rf"is the ({_KIND_WORDS}) on the left or on the right\?", text):
            (obj,) = [a for a in anns if names[a["category_id"]] == m.group(1)]
            assert answer in ("left", "right")
            # the box centre lies in the answered half of the image
            expected = "left" if _box_centre(obj)[0] < width / 2 else "right"
        elif m := re.fullmatch(rf"is there (a|an) ({_COLOUR_WORDS}) ({_KIND_WORDS})\?", text):
            assert m.group(1) == ("an" if m.group(2)[0] in "aeiou" else "a")
            present = any(a["attributes"]["colour"] == m.group(2) and names[a["category_id"]] == m.group(3) for a in anns)
            expected = "yes" if present else "no"
        else:
            raise AssertionError(f"unknown question template: {text}")
        assert answer == expected, text
        checked[text.split()[0] + " " + text.split()[1]] += 1
    assert len(checked) == 4  # "how many", "what color", "is the", "is there"


def _count(word):
    return 1 if word in ("a", "an") else NUMBER_WORDS.index(word)


def _article_ok(words):
    return words[0] not in ("a", "an") or words[0] == ("an" if words[1][0] in "aeiou" else "a")


def test_captions_mention_exactly_the_objects_present(shapes):
    out, _, _ = shapes
    coco, names = _load(out)
    captions = json.load(open(out / "annotations" / "captions_val.json"))["annotations"]
    phrase = re.compile(rf"^(a|an|{'|'.join(NUMBER_WORDS)}) (?:({_COLOUR_WORDS}) )?({_KIND_WORDS}|coloured shape)s?$")
    checked = Counter()
    for caption in captions:
        anns = coco.imgToAnns[caption["image_id"]]
        attrs = [(a["attributes"]["colour"], names[a["category_id"]], _box_centre(a)) for a in anns]
        text = caption["caption"]
        if m := re.fullmatch(rf"(a|an) ({_COLOUR_WORDS}) ({_KIND_WORDS}) to the left of (a|an) ({_COLOUR_WORDS}) "
                             rf"({_KIND_WORDS})", text):
            art1, c1, k1, art2, c2, k2 = m.groups()
            assert _article_ok([art1, c1]) and _article_ok([art2, c2]), text
            assert any(a[:2] == (c1, k1) and b[:2] == (c2, k2) and a[2][0] < b[2][0]
                       for a in attrs for b in attrs if a is not b), text
            assert caption["style"] == "relation", caption
            checked["left of"] += 1
            continue
        body = re.sub(r" on a (textured|patterned) background$", "", text)
        counted = Counter()
        for part in re.split(r", | and ", body):
            m = phrase.match(part)
            assert m, (text, part)
            number, colour, kind = m.groups()
            assert _article_ok(part.split()) and (kind.endswith("shape") or kind in SHAPE_KINDS), text
            assert (_count(number) == 1) == (not part.endswith("s")), text  # the plural agrees (no kind ends in s)
            counted[(colour, kind)] += _count(number)
        if body.endswith("coloured shape") or body.endswith("coloured shapes"):
            expected, style = Counter({(None, "coloured shape"): len(attrs)}), "count"
        elif text.endswith("textured background"):
            expected, style = Counter((None, k) for _, k, _ in attrs), "kinds"
        else:
            expected, style = Counter((c, k) for c, k, _ in attrs), "objects"
        assert caption["style"] == style, caption
        assert counted == expected, text
        checked["counts"] += 1
    assert checked["counts"] == 3 * len(coco.dataset["images"]) and checked["left of"] > 0


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


def test_tool_varied_style_writes_a_heldout_split_and_statistics(tmp_path, capsys):
    from tools.make_shapes import main, split_statistics
    main(["--out", str(tmp_path), "--style", "varied", "--num-train", "3", "--num-val", "2", "--num-heldout", "2",
          "--workers", "1", "--stats"])
    for split, n in (("train", 3), ("val", 2), ("val_heldout", 2)):
        names = os.listdir(tmp_path / "images" / split)
        assert len(names) == n and all(name.endswith((".png", ".jpg")) for name in names)
        images = json.load(open(tmp_path / "annotations" / f"instances_{split}.json"))["images"]
        assert {i["settings"] for i in images} == {"heldout" if split == "val_heldout" else "train"}
        stats = split_statistics(str(tmp_path), split)
        assert sum(stats["objects_per_image"].values()) == n
        assert sum(k * v for k, v in stats["objects_per_image"].items()) == len(
            json.load(open(tmp_path / "annotations" / f"instances_{split}.json"))["annotations"])
    assert "val_heldout: objects per image" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the classic style has no held-out settings
        main(["--out", str(tmp_path / "c"), "--num-heldout", "2"])
