"""The request task: its wrapper is recognised before anything it wraps is parsed, and the
canonical forms expand into the evaluation phrasing of the task they name."""
import pytest

from visionllm.instructions import OutputFormat
from visionllm.tasks import (UNSUPPORTED, CanonicalFormError, canonical_text, canonical_vocabulary, category_tasks,
                             read_canonical, read_instruction, request_in, templates_of, wrap_request)
from visionllm.tasks.request import request_words


@pytest.mark.parametrize("request_text", [
    "How many triangles are in <image>?",                    # a question: VQA would claim it
    "Find all stars in <image> as (c, x1, y1, x2, y2).",     # a format without a category set
    "Detect the stars in <image>.",                          # detect without a format (strict error)
    'Find "the red square" in <image> and give (c, x1, y1, x2, y2).',  # a whole grounding instruction
])
def test_the_wrapper_is_the_request_task_whatever_it_wraps(request_text):
    wrapped = wrap_request(request_text)
    assert wrapped.count("<image>") == 1
    for strict in (True, False):
        parsed = read_instruction(wrapped, strict=strict)
        assert parsed.task == "request" and parsed.output_format is None and parsed.categories == []


def test_request_words_drop_the_image_at_the_ends_and_name_it_inside():
    assert request_words("<image> List every shape.") == "List every shape."
    assert request_words("Describe   <image>") == "Describe"
    assert request_words("How many stars are in <image>?") == "How many stars are in the image?"


@pytest.mark.parametrize("task, values, categories, output_format", [
    ("detection", dict(categories=["star", "hexagon"]), ["star", "hexagon"], OutputFormat.box()),
    ("segmentation", dict(categories=["star"]), ["star"], OutputFormat.polygon(16)),
    ("grounding", dict(expression="the red square"), ["the red square"], OutputFormat.box()),
    ("vqa", dict(question="how many triangles are there?"), [], None),
    ("caption", {}, [], None),
])
def test_canonical_forms_expand_to_template_0_and_read_back(task, values, categories, output_format):
    canonical = canonical_text(task, **values)
    expanded = read_canonical(canonical)
    assert expanded.task == task and expanded.categories == categories and expanded.output_format == output_format
    assert templates_of(task)[0].split("{")[0] in expanded.text  # the evaluation phrasing
    parsed = read_instruction(expanded.text)
    assert (parsed.task, parsed.categories, parsed.output_format) == (task, categories, output_format)
    if task == "vqa":
        assert values["question"] in expanded.text


def test_segmentation_takes_the_polygon_size_given():
    assert read_canonical("segmentation: star", num_points=8).output_format == OutputFormat.polygon(8)


def test_unsupported_and_spacing():
    assert canonical_text(None) == UNSUPPORTED and read_canonical(" unsupported ") is None
    assert read_canonical("detection:  star ;hexagon").categories == ["star", "hexagon"]


@pytest.mark.parametrize("bad", ["", "a red star", "request: find stars", "detection", "detection: star; star",
                                 "caption: two stars", "vqa:", "grounding: ", "detection: ;", "segmentation: star",
                                 "translate: hello"])
def test_unreadable_canonical_forms_raise(bad):
    if bad == "segmentation: star":
        read_canonical(bad)  # readable: the control case of the list
        return
    with pytest.raises(CanonicalFormError):
        read_canonical(bad)


def test_request_in_finds_the_users_words_only_inside_the_wrapper():
    assert request_in(wrap_request("Count every <image> square.")) == "Count every the image square."
    assert request_in("  " + wrap_request("Find the stars in <image>.").replace(" ", "  ")) == "Find the stars in the image."
    assert request_in("<image> Describe the image.") is None
    assert request_in("Rewrite this request as a task: find stars") is None  # no image: not the wrapper


def test_canonical_vocabulary_holds_the_request_words_in_both_numbers_and_the_task_names():
    words = canonical_vocabulary("Find all Stars and boxes in <image>, please!", ["how many are there"])
    for word in ("star", "stars", "Stars", "box", "boxes", "find", "Find", "please", "how", "many", "there",
                 "detection", "segmentation", "grounding", "vqa", "caption", UNSUPPORTED):
        assert word in words, word
    assert "request" not in words  # the wrapper's own task is never a canonical form
    assert not {"circle", "hexagon", "red", "<image>", "!"} & set(words)
    assert {"berry", "berries"} <= set(canonical_vocabulary("any berries?"))
    assert {"category", "categories"} <= set(canonical_vocabulary("one category"))


def test_category_tasks_are_the_structured_tasks_over_many_objects():
    assert set(category_tasks()) == {"detection", "segmentation"}
