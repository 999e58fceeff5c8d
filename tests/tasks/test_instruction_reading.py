"""Reading the task, categories and output format from free-form user instructions."""
import random

import pytest

from visionllm.apis.inferencer import describe_instruction
from visionllm.apis.inputs import InputError
from visionllm.instructions import format_category_set
from visionllm.tasks import (InstructionError, build_instruction, get_task, read_instruction, task_names,
                             task_of_instruction, templates_of)
from visionllm.tasks.reading import quoted_phrase


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


def test_category_set_and_quoted_phrase_of_user_text():
    text = 'Detect {"red \\"big\\" dog": <c0>, "cat": <c1>} in <image> as (c, x1, y1, x2, y2).'
    assert describe_instruction(text)["categories"] == ['red "big" dog', "cat"]
    with pytest.raises(InputError, match="<c0>") as err:
        describe_instruction('Detect {"a": <c0>, "b": <c5>} in <image> as (c, x1, y1, x2, y2).')
    assert "\n" not in str(err.value)
    assert quoted_phrase('Find "the man in red" in <image>') == "the man in red"
    assert describe_instruction('Find "the man in red" in <image> as (c, x1, y1, x2, y2).')["categories"] == \
        ["the man in red"]


def test_every_registered_task_recognises_its_own_evaluation_phrasing_and_only_it():
    """Exactly one spec claims each task's phrasings (a new task that overlaps another fails here)."""
    rng = random.Random(0)
    values = dict(categories=["cat"], expression="the cat", question="how many cats are there?")
    for name in task_names():
        # a region question points at a region
        question = dict(question="what colour is <region>?") if name == "region_vqa" else {}
        for index in range(len(templates_of(name))):
            if get_task(name).wraps_text:  # its one wrapper, around a request any task could read
                text = get_task(name).instruction(rng, index, request="Find all cats in <image>?").text
            else:
                text = build_instruction(name, rng, template_index=index, **{**values, **question}).text
            assert read_instruction(text).task == name, text


def test_a_category_set_without_format_is_structured_for_the_model():
    """The model generates the format of such a request; users are asked to state it."""
    text = 'Segment {"cat": <c0>, "dog": <c1>} in <image>.'
    assert read_instruction(text, strict=False).task == "detection"
    assert task_of_instruction(text).structured
    with pytest.raises(InstructionError, match="no output format"):
        read_instruction(text)
