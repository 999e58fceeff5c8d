"""The varied shapes style: annotations against the saved pixels, text against the annotations,
balanced yes/no answers, held-out settings. Every check reads the written files (images and
json) and recomputes what it needs from them; none copies an output of a run."""
import json
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from visionllm.datasets.shape_backgrounds import HELDOUT_BACKGROUNDS, TRAIN_BACKGROUNDS
from visionllm.datasets.shape_colours import CELL, COLOUR_NAMES, HELDOUT_EVERY
from visionllm.datasets.shapes import SHAPE_KINDS, build_split
from visionllm.datasets.shapes_varied import SETTINGS

KINDS = "|".join(SHAPE_KINDS)
COLOURS = "|".join(COLOUR_NAMES)
HYPER = "shape|object|thing"
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve")


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    out = tmp_path_factory.mktemp("varied")
    seed = int(np.random.randint(1000))
    build_split("train", 40, seed, str(out), style="varied", settings="train")
    build_split("val_heldout", 16, seed, str(out), style="varied", settings="heldout")
    return out, seed


def _load(out, split):
    coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    return coco, names


def _centre(ann):
    x, y, w, h = ann["bbox"]
    return x + w / 2, y + h / 2


def _erode(mask, steps):
    out = mask.copy()
    for _ in range(steps):
        inner = out.copy()
        inner[1:] &= out[:-1]
        inner[:-1] &= out[1:]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        out = inner
    return out


def _dilate(mask, steps):
    return ~_erode(~mask, steps)


@pytest.mark.parametrize("split", ["train", "val_heldout"])
def test_masks_match_the_colours_in_the_saved_image(varied, split):
    """Inside each mask (away from the anti-aliased edge) the decoded pixels have the object's
    recorded colour, whose nearest table name is the annotated colour; a band just outside
    the mask (where no other object is) does not, so the mask sits where the object was drawn."""
    out, _ = varied
    coco, _ = _load(out, split)
    palette = np.asarray(list(COLOUR_NAMES.values()), dtype=np.float64)
    formats = Counter()
    checked = 0
    for img in coco.dataset["images"]:
        pixels = np.asarray(Image.open(out / "images" / split / img["file_name"]).convert("RGB"), dtype=np.float64)
        assert pixels.shape == (img["height"], img["width"], 3)
        jpeg = img["file_name"].endswith(".jpg")
        formats[jpeg] += 1
        anns = coco.imgToAnns[img["id"]]
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        assert all(m.sum() == a["area"] for m, a in zip(masks, anns))
        union = np.logical_or.reduce(masks) if masks else np.zeros(pixels.shape[:2], bool)
        for ann, mask in zip(anns, masks):
            rgb = np.asarray(ann["attributes"]["rgb"], dtype=np.float64)
            nearest = list(COLOUR_NAMES)[int(np.linalg.norm(palette - rgb, axis=1).argmin())]
            assert nearest == ann["attributes"]["colour"]
            # JPEG blurs colour over 2x2 chroma samples and 8x8 blocks (small saturated objects
            # lose up to ~30 levels): its pixels are held to the colour's name, PNG's to the RGB.
            inner = _erode(mask, 3 if jpeg else 2)
            if inner.sum() < 6:
                continue
            distance = np.linalg.norm(pixels[inner] - rgb, axis=1)
            if jpeg:
                typical = np.median(pixels[inner], axis=0)
                seen = list(COLOUR_NAMES)[int(np.linalg.norm(palette - typical, axis=1).argmin())]
                assert seen == nearest and np.median(distance) < 35, (img["file_name"], ann["id"])
            else:
                assert np.median(distance) < 10 and (distance < 20).mean() > 0.9, (img["file_name"], ann["id"])
            band = _dilate(mask, 4) & ~_dilate(mask, 2) & ~_dilate(union & ~mask, 2)
            if band.sum() >= 6:
                outside = np.linalg.norm(pixels[band] - rgb, axis=1)
                assert (outside < 20).mean() < 0.3, (img["file_name"], ann["id"])
            checked += 1
    assert checked > 40 and len(formats) == 2  # both PNG and JPEG files


def test_objects_per_image_and_sizes_vary(varied):
    out, _ = varied
    coco, _ = _load(out, "train")
    counts = [len(coco.imgToAnns[i]) for i in coco.getImgIds()]
    assert max(counts) <= 12 and len(set(counts)) >= 4
    sizes = {(i["width"], i["height"]) for i in coco.dataset["images"]}
    assert len(sizes) > 30


def _cube_heldout(rgb):
    return sum(int(v) // CELL for v in rgb) % HELDOUT_EVERY == 0


def test_heldout_settings_never_appear_in_train(varied):
    out, _ = varied
    assert not set(TRAIN_BACKGROUNDS) & set(HELDOUT_BACKGROUNDS)
    for split, backgrounds, heldout in (("train", TRAIN_BACKGROUNDS, False),
                                        ("val_heldout", HELDOUT_BACKGROUNDS, True)):
        coco, _ = _load(out, split)
        settings = SETTINGS["heldout" if heldout else "train"]
        other = SETTINGS["train" if heldout else "heldout"]
        for img in coco.dataset["images"]:
            assert img["background"] in backgrounds
            ratio = img["width"] / img["height"]
            assert any(lo <= ratio <= hi for lo, hi in settings.aspect_ranges)
            assert not any(lo < ratio < hi for lo, hi in other.aspect_ranges)
        for ann in coco.dataset["annotations"]:
            assert _cube_heldout(ann["attributes"]["rgb"]) == heldout
            r = ann["attributes"]["radius"]
            img = coco.imgs[ann["image_id"]]
            floor = 5 / min(img["width"], img["height"])  # objects are at least 10 pixels across
            assert any(lo - 1e-3 <= r <= hi + 1e-3 for lo, hi in settings.radius_ranges) or r <= floor + 1e-3
            assert not any(lo + 1e-3 < r < hi - 1e-3 for lo, hi in other.radius_ranges) or r <= floor + 1e-3


_SIDE_WORDS = {"on the left": (0, -1), "leftmost": (0, -1), "furthest to the left": (0, -1),
               "on the right": (0, 1), "rightmost": (0, 1), "furthest to the right": (0, 1),
               "at the top": (1, -1), "topmost": (1, -1), "highest": (1, -1),
               "at the bottom": (1, 1), "lowest": (1, 1), "bottommost": (1, 1)}
_RELATION_WORDS = {"to the left of": (0, -1), "left of": (0, -1), "to the right of": (0, 1),
                   "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
_PRE = "|".join(w for w in _SIDE_WORDS if " " not in w)
_POST = "|".join(sorted((w for w in _SIDE_WORDS if " " in w), key=len, reverse=True))
_REL = "|".join(sorted(_RELATION_WORDS, key=len, reverse=True))
_REF = re.compile(rf"^the (?:(big|large|biggest|largest|small|little|smallest|{_PRE}) )?(?:({COLOURS}) )?"
                  rf"({KINDS}|{HYPER})(?: shape)?(?: that is ({COLOURS}))?"
                  rf"(?: ({_POST}))?(?: ({_REL}) the ({COLOURS}) ({KINDS}))?$")


def test_referring_expressions_single_out_their_object(varied):
    """Parse each expression and recompute, from the annotations alone, the set of objects it
    describes: it must be exactly the referred one."""
    out, _ = varied
    coco, names = _load(out, "train")
    forms = Counter()
    refs = json.load(open(out / "annotations" / "refs_train.json"))
    for ref in refs:
        target = coco.anns[ref["ann_id"]]
        img = coco.imgs[ref["image_id"]]
        margin = (0.08 * img["width"], 0.08 * img["height"])
        anns = coco.imgToAnns[ref["image_id"]]
        for sentence in ref["sentences"]:
            m = _REF.match(sentence["sent"])
            assert m, sentence["sent"]
            modifier, colour, noun, colour_after, post, relation, anchor_colour, anchor_kind = m.groups()
            colour = colour or colour_after
            group = [a for a in anns if (noun not in SHAPE_KINDS or names[a["category_id"]] == noun)
                     and colour in (None, a["attributes"]["colour"])]
            side = _SIDE_WORDS.get(post) or _SIDE_WORDS.get(modifier)
            if side:  # the referred object is past every other member of the group
                axis, sign = side
                group = [a for a in group if all(sign * (_centre(a)[axis] - _centre(o)[axis]) > margin[axis]
                                                 for o in group if o is not a)]
                forms["position"] += 1
            elif modifier in ("big", "large", "biggest", "largest"):
                group = [a for a in group if all(a["attributes"]["radius"] > 1.39 * o["attributes"]["radius"]
                                                 for o in group if o is not a)]
                forms["size"] += 1
            elif modifier in ("small", "little", "smallest"):
                group = [a for a in group if all(a["attributes"]["radius"] * 1.39 < o["attributes"]["radius"]
                                                 for o in group if o is not a)]
                forms["size"] += 1
            if relation:
                (anchor,) = [a for a in anns if a["attributes"]["colour"] == anchor_colour
                             and names[a["category_id"]] == anchor_kind]
                axis, sign = _RELATION_WORDS[relation]
                group = [a for a in group if sign * (_centre(a)[axis] - _centre(anchor)[axis]) > margin[axis]]
                forms["relation"] += 1
            if noun not in SHAPE_KINDS:
                forms["hypernym"] += 1
            assert [a["id"] for a in group] == [target["id"]], sentence["sent"]
    assert forms["position"] > 0 and forms["hypernym"] > 0


def _vqa(out, split):
    questions = json.load(open(out / "annotations" / f"vqa_questions_{split}.json"))["questions"]
    answers = {a["question_id"]: a for a in
               json.load(open(out / "annotations" / f"vqa_annotations_{split}.json"))["annotations"]}
    return [(q, answers[q["question_id"]]["multiple_choice_answer"]) for q in questions]


_NOUNS = {**{n: n for n in (*SHAPE_KINDS, *HYPER.split("|"))},
          **{n + ("es" if n.endswith("x") else "s"): n for n in (*SHAPE_KINDS, *HYPER.split("|"))}}


def _singular(word):
    assert word in _NOUNS, word
    return _NOUNS[word]


def _expected_answer(text, anns, names, width):
    """The answer recomputed from the instances, or raises for an unknown question form."""
    colour_of = lambda a: a["attributes"]["colour"]  # noqa: E731
    kind_of = lambda a: names[a["category_id"]]  # noqa: E731
    if m := re.fullmatch(rf"(?:how many|count the|what is the number of) (?:({COLOURS}) )?(\w+)"
                         r"(?: are there| can you see| are in the image| are in the picture| in the image)?[?.]", text):
        colour, noun = m.group(1), _singular(m.group(2))
        assert noun in SHAPE_KINDS or noun in HYPER.split("|"), text
        return str(sum((colour is None or colour_of(a) == colour) and (noun not in SHAPE_KINDS or kind_of(a) == noun)
                       for a in anns)), "count"
    if m := re.fullmatch(rf"(?:what colou?r is the|which color does the|the) ({KINDS})(?: have| is what color)?\?", text):
        (obj,) = [a for a in anns if kind_of(a) == m.group(1)]
        return colour_of(obj), "colour"
    if m := re.fullmatch(rf"(?:what shape is the|what kind of shape is the|which shape is) ({COLOURS})"
                         rf"(?: (?:{HYPER}))?\?", text):
        (obj,) = [a for a in anns if colour_of(a) == m.group(1)]
        return kind_of(obj), "kind"
    if m := re.fullmatch(rf"(?:is|which side of the image is) the ({KINDS})(?: on)?.*(?:left|right).*\?", text):
        (obj,) = [a for a in anns if kind_of(a) == m.group(1)]
        return ("left" if _centre(obj)[0] < width / 2 else "right"), "side"
    if m := re.fullmatch(rf"is the ({COLOURS}) ({KINDS}) (?:to the left of|left of|on the left side of) the "
                         rf"({COLOURS}) ({KINDS})\?", text):
        (a,) = [o for o in anns if (colour_of(o), kind_of(o)) == m.group(1, 2)]
        (b,) = [o for o in anns if (colour_of(o), kind_of(o)) == m.group(3, 4)]
        return ("yes" if _centre(a)[0] < _centre(b)[0] else "no"), "relation"
    if m := re.fullmatch(rf"(?:is there an?|do you see an?|can you find an?|are there any) (?:({COLOURS}) )?(\w+)"
                         r"(?: in the image)?\?", text):
        colour, noun = m.group(1), _singular(m.group(2))
        assert noun in SHAPE_KINDS or noun in HYPER.split("|"), text
        present = any((colour is None or colour_of(a) == colour) and (noun not in SHAPE_KINDS or kind_of(a) == noun)
                      for a in anns)
        return ("yes" if present else "no"), "presence"
    raise AssertionError(f"unknown question form: {text}")


@pytest.mark.parametrize("split", ["train", "val_heldout"])
def test_vqa_answers_follow_the_instances(varied, split):
    out, _ = varied
    coco, names = _load(out, split)
    kinds = Counter()
    for q, answer in _vqa(out, split):
        expected, kind = _expected_answer(q["question"], coco.imgToAnns[q["image_id"]], names,
                                          coco.imgs[q["image_id"]]["width"])
        assert answer == expected, q["question"]
        kinds[kind] += 1
    assert len(kinds) >= (6 if split == "train" else 4), kinds


def test_yes_no_answers_are_balanced_and_no_wording_carries_the_answer(tmp_path):
    """Over a few hundred yes/no questions about half are yes; and within each wording (the
    question with its colour, kind and hypernym words masked) both answers occur."""
    result = build_split("train", 120, int(np.random.randint(1000)), str(tmp_path), write_images=False,
                         style="varied")
    answers = {a["question_id"]: a for a in result["vqa_annotations"]["annotations"]}
    by_wording = defaultdict(Counter)
    total = Counter()
    mask = re.compile(rf"\b(?:{COLOURS}|{KINDS}|{HYPER})(?:e?s)?\b")
    for q in result["vqa_questions"]["questions"]:
        answer = answers[q["question_id"]]
        if answer["answer_type"] != "yes/no":
            continue
        total[answer["multiple_choice_answer"]] += 1
        by_wording[mask.sub("_", q["question"])][answer["multiple_choice_answer"]] += 1
    n = sum(total.values())
    assert n >= 200 and set(total) == {"yes", "no"}
    assert 0.4 <= total["yes"] / n <= 0.6, total
    for wording, counts in by_wording.items():
        if sum(counts.values()) >= 30:
            assert 0.2 <= counts["yes"] / sum(counts.values()) <= 0.8, (wording, counts)


_PHRASE = re.compile(rf"^(a|an|{'|'.join(NUMBERS)}) (?:(?:coloured|colorful) )?(?:({COLOURS}) )?"
                     rf"({KINDS}|{HYPER})(?:e?s)?$")


def test_captions_mention_only_present_objects_with_true_counts(varied):
    out, _ = varied
    coco, names = _load(out, "train")
    captions = json.load(open(out / "annotations" / "captions_train.json"))["annotations"]
    styles = Counter()
    for caption in captions:
        anns = coco.imgToAnns[caption["image_id"]]
        present = Counter((a["attributes"]["colour"], names[a["category_id"]]) for a in anns)
        text = caption["caption"]
        if not anns:
            assert re.search(r"\b(no|empty|nothing)\b", text), text
            assert caption["style"] == "objects", caption
            styles["empty"] += 1
            continue
        assert not re.search(r"\b(no|empty|nothing)\b", text), text
        if m := re.fullmatch(rf"(an?) ({COLOURS}) ({KINDS}) (to the left of|to the right of|above|below) "
                             rf"(an?) ({COLOURS}) ({KINDS})", text):
            axis, sign = _RELATION_WORDS[m.group(4)]
            a_s = [a for a in anns if (a["attributes"]["colour"], names[a["category_id"]]) == m.group(2, 3)]
            b_s = [a for a in anns if (a["attributes"]["colour"], names[a["category_id"]]) == m.group(6, 7)]
            assert any(sign * (_centre(a)[axis] - _centre(b)[axis]) > 0 for a in a_s for b in b_s if a is not b), text
            assert caption["style"] == "relation", caption
            styles["relation"] += 1
            continue
        head, _, listed = text.partition(": ")
        parts = []
        if listed:
            parts.append(("total", head))
            text = listed
        text = re.sub(r"^(an image of|a picture with) ", "", text)
        parts += [("part", p) for p in re.split(r", | and ", text)]
        mentioned = Counter()
        total_only = True
        for role, phrase in parts:
            m = _PHRASE.match(phrase)
            assert m, (caption["caption"], phrase)
            number, colour, noun = m.groups()
            count = 1 if number in ("a", "an") else NUMBERS.index(number)
            assert (count == 1) == (number in ("a", "an")), phrase
            if noun in HYPER.split("|"):
                assert colour is None and count == len(anns), caption["caption"]  # "five shapes"
                assert caption["style"] == ("count_objects" if listed else "count"), caption
                styles["count"] += 1
                continue
            total_only = False
            mentioned[(colour, noun)] += count
        if total_only:
            continue
        if all(c is None for c, _ in mentioned):
            expected = Counter(k for _, k in present.elements())
            assert Counter({k: n for (_, k), n in mentioned.items()}) == expected, caption["caption"]
            assert caption["style"] == "kinds", caption
            styles["kinds"] += 1
        else:
            assert mentioned == present, caption["caption"]
            assert caption["style"] == ("count_objects" if listed else "objects"), caption
            styles["list"] += 1
    assert styles["list"] > 0 and styles["kinds"] > 0 and styles["count"] > 0 and styles["relation"] > 0


def test_varied_output_is_deterministic_by_seed(tmp_path):
    seed = int(np.random.randint(1000))
    a = build_split("val", 4, seed, str(tmp_path / "a"), style="varied")
    b = build_split("val", 4, seed, str(tmp_path / "b"), style="varied", workers=2)
    c = build_split("val", 4, seed + 1, str(tmp_path / "c"), style="varied")
    assert a["instances"] == b["instances"] and a["vqa_questions"] == b["vqa_questions"]
    assert a["instances"]["annotations"] != c["instances"]["annotations"]
    for name in (i["file_name"] for i in a["instances"]["images"]):
        assert (tmp_path / "a" / "images" / "val" / name).read_bytes() == \
            (tmp_path / "b" / "images" / "val" / name).read_bytes()


def test_backgrounds_and_distractors_carry_no_object_colour(varied):
    """Away from the objects (3 pixels past every mask, beyond anti-aliasing and JPEG ringing)
    hardly a pixel comes within 40 of a table colour (noise backgrounds may stray): neither a
    background nor the clutter's distractors can be read as an annotated object's colour."""
    out, _ = varied
    coco, _ = _load(out, "train")
    palette = np.asarray(list(COLOUR_NAMES.values()), dtype=np.float64)
    kinds = Counter()
    for img in coco.dataset["images"]:
        pixels = np.asarray(Image.open(out / "images" / "train" / img["file_name"]).convert("RGB"), dtype=np.float64)
        near = np.zeros(pixels.shape[:2], bool)
        for ann in coco.imgToAnns[img["id"]]:
            near |= coco.annToMask(ann).astype(bool)
        free = ~_dilate(near, 3)
        distance = np.linalg.norm(pixels[free][:, None, :] - palette, axis=-1).min(axis=1)
        assert (distance < 40).mean() < 0.002, (img["file_name"], img["background"])
        kinds[img["background"]] += 1
    assert len(kinds) >= 4
