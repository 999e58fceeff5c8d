"""Caption styles: a caption whose style the data names is asked for with its own phrasings."""
import json
import random
from collections import Counter

from visionllm.datasets import CocoCaptionDataset
from visionllm.datasets.shapes import build_split
from visionllm.tasks import get_task
from visionllm.tasks.reading import read_instruction

CAPTION = get_task("caption")
STYLED = dict(gt_texts=["a red star and a blue circle", "a star and a circle", "two shapes",
                        "a red star to the left of a blue circle"],
              gt_text_styles=["objects", "kinds", "count", "relation"])


def test_each_style_is_trained_with_its_own_phrasings():
    rng = random.Random(int(random.random() * 1e9))
    seen = Counter()
    for _ in range(400):
        results = dict(STYLED)
        instruction, _ = CAPTION.build(results, rng)
        style = STYLED["gt_text_styles"][STYLED["gt_texts"].index(results["target_text"])]
        expected = CAPTION.style_templates.get(style, CAPTION.templates)
        assert instruction.text in expected, (style, instruction.text)
        seen[style] += 1
    assert set(seen) == set(STYLED["gt_text_styles"]) and min(seen.values()) > 50


def test_style_phrasings_are_distinct_and_read_as_caption_requests():
    phrasings = [t for ts in CAPTION.style_templates.values() for t in ts]
    assert len(set(phrasings)) == len(phrasings)
    assert not set(phrasings) & set(CAPTION.templates)
    for text in phrasings:
        assert read_instruction(text).task == "caption", text


def test_fixed_phrasing_targets_the_objects_caption_and_unstyled_data_keeps_the_plain_phrasings():
    results = dict(gt_texts=STYLED["gt_texts"][::-1], gt_text_styles=STYLED["gt_text_styles"][::-1])
    instruction, _ = CAPTION.build(results, random.Random(0), template_index=0)
    assert results["target_text"] == "a red star and a blue circle" and instruction.text == CAPTION.templates[0]
    rng = random.Random(1)
    for _ in range(50):
        results = dict(gt_texts=list(STYLED["gt_texts"]))
        instruction, _ = CAPTION.build(results, rng)
        assert instruction.text in CAPTION.templates and results["target_text"] in STYLED["gt_texts"]


def test_generated_styles_reach_the_task_through_the_reader(tmp_path):
    for style in ("varied", "classic"):
        build_split("val", 6, 3, str(tmp_path / style), write_images=False, style=style)
        ann = tmp_path / style / "annotations" / "captions_val.json"
        raw = json.load(open(ann))["annotations"]
        data = CocoCaptionDataset(ann_file=str(ann), check_image_files=False, serialize_data=False)
        written = Counter(a["style"] for a in raw)
        read = Counter(s for i in range(len(data)) for s in data.get_data_info(i)["gt_text_styles"])
        assert read == written and set(written) <= {"objects", *CAPTION.style_templates}, written
        for i in range(len(data)):
            info = data.get_data_info(i)
            assert len(info["gt_texts"]) == len(info["gt_text_styles"])
            by_text = {a["caption"]: a["style"] for a in raw if a["image_id"] == info["img_id"]}
            assert [by_text[t] for t in info["gt_texts"]] == info["gt_text_styles"]


def test_reader_without_styles_trains_every_caption_with_the_plain_phrasings(tmp_path):
    build_split("train", 6, 3, str(tmp_path), write_images=False, style="varied")
    ann = str(tmp_path / "annotations" / "captions_train.json")
    data = CocoCaptionDataset(ann_file=ann, check_image_files=False, serialize_data=False, read_styles=False)
    styled = CocoCaptionDataset(ann_file=ann, check_image_files=False, serialize_data=False)
    rng, targets = random.Random(2), set()
    for i in range(len(data)):
        info = data.get_data_info(i)
        assert "gt_text_styles" not in info and info["gt_texts"] == styled.get_data_info(i)["gt_texts"]
        for _ in range(10):
            results = dict(gt_texts=list(info["gt_texts"]))
            instruction, _ = CAPTION.build(results, rng)
            assert instruction.text in CAPTION.templates
            targets.add(results["target_text"])
    # every style's captions are still targets, each asked for with a plain phrasing
    assert len(targets) > 2 * len(data)


def test_the_requested_style_is_read_from_its_phrasings_and_from_a_users_words():
    for style, phrasings in CAPTION.style_templates.items():
        for text in phrasings:
            assert CAPTION.requested_style(text.upper()) == style, text  # case and spacing do not matter
    assert all(CAPTION.requested_style(text) is None for text in CAPTION.templates)  # plain: the full list
    for text, style in [("<image> caption it with just how many things there are", "count"),
                        ("Tell me the number of shapes in <image> and then list them", "count_objects"),
                        ("Describe <image> without the colors.", "kinds"),
                        ("Caption this image without mentioning colours.", "kinds"),
                        ("Describe <image>, ignoring their colours.", "kinds"),
                        ("<image> Say where a shape is relative to the others.", "relation"),
                        ("<image> Describe the colours and shapes you see.", None)]:
        assert CAPTION.requested_style(text) == style, text
