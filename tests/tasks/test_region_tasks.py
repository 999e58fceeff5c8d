"""The region tasks: their phrasings are read back as them (and only them), user phrasings with
<region> go to a region task, and BuildInstruction fills instruction and targets of region samples."""
import random

import pytest

from visionllm.tasks import build_instruction, get_task, read_instruction, templates_of

REGION_TASKS = ("region_caption", "region_vqa", "region_classification")
VALUES = dict(region_caption={}, region_vqa=dict(question="is <region> left of <region>?"),
              region_classification=dict(categories=["star", "circle", "red square"]))


@pytest.mark.parametrize("task", REGION_TASKS)
def test_every_phrasing_builds_and_is_read_back_as_its_task(task):
    assert len(set(templates_of(task))) >= 15
    for index in range(len(templates_of(task))):
        built = build_instruction(task, random.Random(index), template_index=index, **VALUES[task])
        assert built.text.count("<image>") == 1 and "<region>" in built.text
        assert built.categories == [] and built.output_format is None
        read = read_instruction(built.text)
        assert read.task == task, built.text
        if task == "region_vqa":
            assert "is <region> left of <region>?" in built.text
        if task == "region_classification":
            assert '"star", "circle", "red square"' in built.text


@pytest.mark.parametrize("text, task", [
    ("<image> Describe <region>.", "region_caption"),
    ("<image> What is this? <region> Describe it.", "region_caption"),
    ("<image> What colour is <region>?", "region_vqa"),
    ("<image> Is <region> left of <region>?", "region_vqa"),
    ("<image> What shape is <region>?", "region_vqa"),
    ('<image> Which of {"star": <c0>, "circle": <c1>} is <region>?', "region_classification"),
    ("<image> Which of star, circle or square is <region>?", "region_classification"),
    # without a region the image-level tasks keep them
    ("<image> Describe the picture.", "caption"),
    ("<image> What colour is the star?", "vqa"),
])
def test_user_phrasings_with_and_without_regions(text, task):
    assert read_instruction(text).task == task


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="<region>"):
        build_instruction("region_vqa", random.Random(0), question="what colour is the star?")
    with pytest.raises(ValueError, match="category name"):
        build_instruction("region_classification", random.Random(0), categories=[])


def _build(info, template_index=0, seed=0):
    from visionllm.datasets.transforms import BuildInstruction
    return BuildInstruction(template_index=template_index, seed=seed)(dict(info))


def test_region_samples_get_their_instruction_and_target():
    box = [[4.0, 5.0, 20.0, 30.0]]
    caption = _build(dict(task="region_caption", regions=box, gt_texts=["the big red star", "the star"]))
    assert caption["instruction"] == templates_of("region_caption")[0]
    assert caption["target_text"] == "the big red star"  # the evaluation phrasing takes the first reference
    trained = {_build(dict(task="region_caption", regions=box, gt_texts=["a", "b"]), None, seed)["target_text"]
               for seed in range(20)}
    assert trained == {"a", "b"}  # training draws among the references

    vqa = _build(dict(task="region_vqa", regions=box * 2, question="is <region> above <region>?",
                      gt_texts=["no"], target_text="no"))
    assert vqa["instruction"] == templates_of("region_vqa")[0].format(question="is <region> above <region>?")
    assert vqa["target_text"] == "no" and vqa["categories"] == [] and vqa["output_format"] is None

    cls = _build(dict(task="region_classification", regions=box, region_categories=["circle", "star"],
                      gt_texts=["star"]))
    assert cls["instruction"] == templates_of("region_classification")[0].format(names='"circle", "star"')
    assert cls["target_text"] == "star"
    assert get_task("region_classification").structured is False
