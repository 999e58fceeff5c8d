"""Reading the task, categories and output format from free-form user instructions."""
import pytest

from visionllm.apis.inferencer import describe_instruction
from visionllm.apis.inputs import InputError
from visionllm.instructions import build_instruction, format_category_set
import random


@pytest.mark.parametrize("task", ["detection", "segmentation", "grounding", "caption", "vqa"])
def test_every_template_is_read_back_as_its_task(task):
    rng = random.Random()
    for index in range(15):
        kwargs = dict(template_index=index)
        if task in ("detection", "segmentation"):
            kwargs["categories"] = ["red circle", "blue star", "cat"]
        if task == "grounding":
            kwargs["expression"] = "the big square on the left"
        if task == "vqa":
            kwargs["question"] = "how many circles are there?"
        if task == "segmentation":
            kwargs["num_points"] = rng.choice([8, 14, 16, 20, 24])
        built = build_instruction(task, rng, **kwargs)
        read = describe_instruction(built.text)
        assert read["task"] == task, built.text
        assert read["categories"] == list(built.categories), built.text
        expected_format = tuple(built.output_format.fields) if built.output_format else None
        assert read["output_format"] == expected_format


def test_user_phrasings():
    det = describe_instruction('Find all {"dog": <c0>, "cat": <c1>} in <image>, give (c, x1, y1, x2, y2).')
    assert det["task"] == "detection" and det["categories"] == ["dog", "cat"]
    seg = describe_instruction('<image> segment {"dog": <c0>} as (c, x1, y1, ..., x8, y8)')
    assert seg["task"] == "segmentation" and len(seg["output_format"]) == 17
    assert describe_instruction("<image> What colour is the star?")["task"] == "vqa"
    assert describe_instruction("Describe <image> briefly.")["task"] == "caption"


@pytest.mark.parametrize("text, message", [
    ("Write a short caption for the image.", "<image> exactly once"),
    ("<image> <image> compare", "exactly once"),
    ("", "empty"),
    ("Detect {} in <image> as (c, x1, y1, x2, y2).", "category set is empty"),
    ('Detect {"a": <c0>} in <image> as (c, x1, y1, ..., x30, y30).', "cannot produce"),
    ("Detect things in <image> as (c, x1, y1, x2, y2).", "category set"),
    ('Detect {"circle": <c0>} in <image>. Output the boxes.', "no output format"),
    ('<image> Segment the dogs.', "no output format"),
])
def test_bad_instructions_give_one_line_errors(text, message):
    with pytest.raises(InputError, match=message) as err:
        describe_instruction(text)
    assert "\n" not in str(err.value)


def test_many_categories_are_kept_in_order():
    names = [f"thing {i}" for i in range(700)]
    text = f"Detect {format_category_set(names)} in <image>. Answer as (c, x1, y1, x2, y2)."
    read = describe_instruction(text)
    assert read["categories"] == names
