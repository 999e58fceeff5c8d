"""Questions about named objects answered through the model's own grounding
(visionllm.models.question_grounding): which questions, their grounding samples, the region
question they become, and the whole model's two passes."""
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from visionllm.models.question_grounding import (GroundedQuestion, QuestionGrounding, answer_words,
                                                 build_question_grounding, read_presence, read_question,
                                                 read_relation)
from visionllm.tasks import read_instruction, task_of_instruction


def _sample(instruction, **meta):
    sample = DetDataSample()
    sample.set_metainfo(dict(instruction=instruction, img_shape=(64, 96), scale_factor=(0.5, 0.25), **meta))
    return sample


@pytest.mark.parametrize("question, expected", [
    ("is the orange star to the left of the pink circle?", ("the orange star", "left", "the pink circle")),
    ("Is the orange star left of the pink circle?", ("the orange star", "left", "the pink circle")),
    ("is the big red square on the left side of the blue circle?", ("the big red square", "left", "the blue circle")),
    ("is the star on the right hand side of the dark-blue circle ?", ("the star", "right", "the dark-blue circle")),
    ("is the star above the circle?", ("the star", "above", "the circle")),
    ("Is the star Under the small circle?", ("the star", "under", "the small circle")),
    ("is the star on the left or on the right?", None),
    ("is the star on the left side of the image?", None),
    ("how many stars are there left of the circle?", None),
    ("is there a red star?", None),
])
def test_relations_are_read_from_the_question(question, expected):
    assert read_relation(question) == expected
    assert read_relation(f"<image> Answer the question: {question}") == expected


@pytest.mark.parametrize("question, expected", [
    ("is the orange star to the left of the pink circle?",
     GroundedQuestion(("the orange star", "the pink circle"), "is <region> left of <region>?")),
    ("is the star below the circle?", GroundedQuestion(("the star", "the circle"), "is <region> below <region>?")),
    ("what color is the star?", GroundedQuestion(("the star",), "what colour is <region>?")),
    ("What colour is the big hexagon ?", GroundedQuestion(("the big hexagon",), "what colour is <region>?")),
    ("which color does the small star have?", GroundedQuestion(("the small star",), "what colour is <region>?")),
    ("what is the colour of the diamond?", GroundedQuestion(("the diamond",), "what colour is <region>?")),
    ("the square is what color?", GroundedQuestion(("the square",), "what colour is <region>?")),
    ("what kind of shape is the pink object?", GroundedQuestion(("the pink object",), "what shape is <region>?")),
    ("What shape is the orange thing ?", GroundedQuestion(("the orange thing",), "what shape is <region>?")),
    ("what is the shape of the big object?", GroundedQuestion(("the big object",), "what shape is <region>?")),
    ("the red object is what shape?", GroundedQuestion(("the red object",), "what shape is <region>?")),
    ("which shape is pink?", GroundedQuestion(("the pink shape",), "what shape is <region>?")),
    ("which thing is yellow?", GroundedQuestion(("the yellow thing",), "what shape is <region>?")),
    ("is the star on the left or on the right?", GroundedQuestion(("the star",), side=True)),
    ("is the red circle on the left or the right side of the image?", GroundedQuestion(("the red circle",), side=True)),
    ("which side of the image is the square on, left or right?", GroundedQuestion(("the square",), side=True)),
    ("On which side is the hexagon?", GroundedQuestion(("the hexagon",), side=True)),
    ("what color is the image?", None),
    ("what shape is the picture?", None),
    ("what colour are the stars?", None),
    ("how many red stars are there?", None),
    ("is there a red star?", None),
    ("is the star on the left?", None),
])
def test_what_a_question_is_answered_as(question, expected):
    assert read_question(question) == expected
    assert read_question(f"<image> Answer the question: {question}") == expected


COLOURS, KINDS = ("red", "blue"), ("circle", "star")
RED_CIRCLE = GroundedQuestion(("the red circle",), None, (("what colour is <region>?", "red"),
                                                          ("what shape is <region>?", "circle")))


@pytest.mark.parametrize("question, expected", [
    ("is there a red circle?", ("red", "circle")),
    ("Is there a red circle in the image ?", ("red", "circle")),
    ("are there any blue stars?", ("blue", "star")),
    ("do you see a red shape?", ("red", "shape")),
    ("can you find any blue things in this picture?", ("blue", "thing")),
    ("does the image contain a red object?", ("red", "object")),
    ("is a blue circle visible?", ("blue", "circle")),
    ("is there a green circle?", None),  # not a colour the model names
    ("is there a red hexagon?", None),  # not a kind the model names
    ("is there a circle?", None),
    ("is there a big red circle?", None),
    ("is the red circle left of the blue star?", None),
    ("how many red circles are there?", None),
])
def test_presence_questions_are_read_with_the_models_words(question, expected):
    assert read_presence(question, COLOURS, KINDS) == expected
    assert read_presence(f"<image> Answer the question: {question}", COLOURS, KINDS) == expected


def test_a_presence_question_checks_the_colour_and_the_kind_or_only_the_colour_for_a_hypernym():
    grounding = build_question_grounding(dict(colours=COLOURS, kinds=KINDS))
    assert grounding.read("is there a red circle?") == RED_CIRCLE
    assert grounding.read("are there any blue shapes?") == GroundedQuestion(
        ("the blue shape",), None, (("what colour is <region>?", "blue"),))
    assert grounding.read("what color is the star?") == read_question("what color is the star?")
    assert build_question_grounding(dict()).read("is there a red circle?") is None  # no words: as asked


def test_only_questions_about_named_objects_are_grounded_and_each_name_gets_a_grounding_sample():
    grounding = build_question_grounding(dict())
    assert build_question_grounding(None) is None
    samples = [_sample("<image> Answer the question: is the red star left of the blue circle?"),
               _sample("<image> Answer the question: how many stars are there?"),
               _sample('Find "the star left of the circle" in <image> and give (c, x1, y1, x2, y2).'),
               _sample("<image> Write a short caption for the image."),
               _sample("<image> Answer the question: what color is the star?")]
    rows = grounding.rows(samples)
    assert rows == [(0, GroundedQuestion(("the red star", "the blue circle"), "is <region> left of <region>?")),
                    (4, GroundedQuestion(("the star",), "what colour is <region>?"))]
    ground = grounding.grounding_sample(samples[0], "the red star")
    understood = read_instruction(ground.instruction)
    assert understood.task == "grounding" and understood.categories == ["the red star"] == ground.categories
    assert ground.output_format == ("cls", "x1", "y1", "x2", "y2") and ground.history is None
    assert samples[0].instruction.endswith("circle?")  # the asked sample is left as it was


def _grounded(boxes, scores):
    sample = DetDataSample()
    sample.pred_instances = InstanceData(bboxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                         scores=torch.as_tensor(scores, dtype=torch.float32))
    return sample


@pytest.mark.parametrize("asked", ["to the left of", "right of", "above"])
def test_the_question_becomes_the_region_question_about_the_best_boxes(asked):
    original = f"<image> Answer the question: is the star {asked} the circle?"
    sample = _sample(original)
    first = _grounded([[0, 0, 10, 10], [20, 40, 60, 80]], [0.2, 0.9])  # the better box is the second
    second = _grounded([[100, 8, 140, 8]], [0.5])  # no height: still a region with an area
    QuestionGrounding.region_question(sample, read_question(original), [first, second])
    assert task_of_instruction(sample.instruction).name == "region_vqa"
    assert f"is <region> {asked.replace('to the ', '')} <region>?" in sample.instruction
    assert sample.grounded_boxes == [[20, 40, 60, 80], [100, 8, 140, 9]]  # pixels of the input image
    assert sample.grounded_names == ["the star", "the circle"]
    assert sample.regions == [[10, 10, 30, 20], [50, 2, 70, 2.25]]  # pixels of img_shape (scale_factor)
    QuestionGrounding.restore(sample)
    assert sample.instruction == original and sample.regions is None


def test_a_colour_question_becomes_the_region_colour_question_about_the_best_box():
    original = "<image> Answer the question: what color is the star?"
    sample = _sample(original)
    QuestionGrounding.region_question(sample, read_question(original),
                                      [_grounded([[0, 0, 10, 10], [20, 40, 60, 80]], [0.9, 0.3])])
    assert task_of_instruction(sample.instruction).name == "region_vqa"
    assert "what colour is <region>?" in sample.instruction
    assert sample.grounded_boxes == [[0, 0, 10, 10]] and sample.regions == [[0, 0, 5, 2.5]]
    QuestionGrounding.restore(sample)
    assert sample.instruction == original and sample.regions is None


@pytest.mark.parametrize("box, side", [([0, 0, 100, 10], "left"), ([0, 0, 191, 10], "left"),
                                       ([0, 0, 193, 10], "right"), ([150, 5, 190, 10], "right")])
def test_a_side_question_is_answered_with_the_side_of_the_image_the_best_box_centre_lies_on(box, side):
    original = "<image> Answer the question: is the star on the left or on the right?"
    sample = _sample(original)  # 96 wide at scale 0.5: the input image is 192 wide
    asked = QuestionGrounding.region_question(sample, read_question(original),
                                              [_grounded([[180, 0, 190, 10], box], [0.1, 0.8])])
    assert asked == [] and sample.instruction == original and sample.grounded_boxes == [box]
    sample.pred_text = "the LLM's own answer"
    QuestionGrounding.restore(sample)
    assert sample.pred_text == side


def test_a_name_not_found_leaves_the_question_as_asked():
    original = "<image> Answer the question: is the star left of the circle?"
    sample = _sample(original)
    QuestionGrounding.region_question(sample, read_question(original),
                                      [_grounded([[0, 0, 10, 10]], [0.9]), _grounded(torch.zeros(0, 4), [])])
    assert sample.instruction == original and "regions" not in sample.metainfo
    QuestionGrounding.restore(sample)
    assert sample.instruction == original
    side = _sample("<image> Answer the question: is the star on the left or on the right?")
    QuestionGrounding.region_question(side, read_question(side.instruction), [_grounded(torch.zeros(0, 4), [])])
    side.pred_text = "left"
    QuestionGrounding.restore(side)
    assert side.pred_text == "left" and "composed_answer" not in side.metainfo


def test_a_presence_question_asks_each_check_about_the_best_box_and_composes_the_answer():
    original = "<image> Answer the question: is there a red circle?"
    sample = _sample(original)
    checks = QuestionGrounding.region_question(sample, RED_CIRCLE, [_grounded([[0, 0, 10, 10], [20, 40, 60, 80]],
                                                                              [0.3, 0.9])])
    assert sample.instruction == original and sample.grounded_boxes == [[20, 40, 60, 80]]  # asked as is
    assert [c.instruction for c in checks] == ["<image> Answer the question: what colour is <region>?",
                                              "<image> Answer the question: what shape is <region>?"]
    assert all(c.regions == [[10, 10, 30, 20]] for c in checks)
    for colour, kind, expected in [("Red", "circle.", "yes"), ("red", "star", "no"), ("blue", "circle", "no")]:
        checks[0].pred_text, checks[1].pred_text = colour, kind
        QuestionGrounding.compose(sample, RED_CIRCLE, checks)
        sample.pred_text = "the LLM's own answer"
        QuestionGrounding.restore(sample)
        assert sample.pred_text == expected and sample.instruction == original


def test_a_presence_question_whose_thing_is_not_found_is_answered_no():
    sample = _sample("<image> Answer the question: is there a red circle?")
    assert QuestionGrounding.region_question(sample, RED_CIRCLE, [_grounded(torch.zeros(0, 4), [])]) == []
    sample.pred_text = "yes"
    QuestionGrounding.restore(sample)
    assert sample.pred_text == "no"


@pytest.mark.slow
@pytest.mark.parametrize("asked, names, region_question", [
    ("<image> Answer the question: is the red star left of the blue circle?", ["the red star", "the blue circle"],
     "<image> Answer the question: is <region> left of <region>?"),
    ("<image> Answer the question: what color is the star?", ["the star"],
     "<image> Answer the question: what colour is <region>?"),
])
def test_the_model_grounds_the_names_then_answers_the_region_question(tmp_path, monkeypatch, tiny_llm_dir,
                                                                       tiny_workspace, asked, names,
                                                                       region_question):
    from tiny_model import build_tiny_model, predict_one, record_passes, item_for_untrained

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                             question_grounding=dict())
    question = item_for_untrained(model, test_set, asked)
    passes = record_passes(model, monkeypatch)
    result = predict_one(model, question)
    # one grounding pass for all names, then the question
    (grounding, _), (main, _) = passes
    assert [read_instruction(i).categories for i in grounding] == [[name] for name in names] and main == [asked]
    assert result.instruction == asked and result.task == "vqa" and len(result.grounded_boxes) == len(names)

    # the answer is the model's answer to the region question about the boxes, asked directly
    model.question_grounding = None
    direct = model.data_preprocessor(pseudo_collate([question]), False)
    w_scale, h_scale = direct["data_samples"][0].metainfo["scale_factor"][:2]
    direct["data_samples"][0].set_metainfo(dict(
        instruction=region_question,
        regions=[[x1 * w_scale, y1 * h_scale, x2 * w_scale, y2 * h_scale] for x1, y1, x2, y2 in result.grounded_boxes]))
    with torch.no_grad():
        [answer] = model(**direct, mode="predict")
    assert answer.pred_text == result.pred_text


@pytest.mark.slow
def test_the_model_answers_a_presence_question_from_its_region_answers_about_the_grounded_box(
        tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):
    from tiny_model import build_tiny_model, predict_one, record_passes, item_for_untrained

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                             question_grounding=dict(colours=["red"], kinds=["star"]))
    asked = "<image> Answer the question: is there a red star?"
    question = item_for_untrained(model, test_set, asked)
    passes = record_passes(model, monkeypatch)  # inner passes finish first
    result = predict_one(model, question)
    (grounding, _), (checks, answered), (main, _) = passes
    assert [read_instruction(i).categories for i in grounding] == [["the red star"]]
    assert checks == ["<image> Answer the question: what colour is <region>?",
                      "<image> Answer the question: what shape is <region>?"]
    assert main == [asked] and result.instruction == asked and len(result.grounded_boxes) == 1
    said = [answer_words(a.pred_text) for a in answered]
    assert result.pred_text == ("yes" if said == ["red", "star"] else "no")

    # the same checks expecting what the model said: "yes"
    expecting_said = GroundedQuestion(("the red star",), None, tuple(zip([c.split(": ")[1] for c in checks], said)))
    monkeypatch.setattr(model.question_grounding, "read", lambda text: expecting_said if text == asked else None)
    passes.clear()
    assert predict_one(model, question).pred_text == "yes"


@pytest.mark.slow
def test_the_model_answers_a_side_question_from_its_grounded_box(tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):
    from tiny_model import build_tiny_model, predict_one, item_for_untrained

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                             question_grounding=dict())
    asked = "<image> Answer the question: is the star on the left or on the right?"
    question = item_for_untrained(model, test_set, asked)
    result = predict_one(model, question)
    [(x1, _, x2, _)] = result.grounded_boxes  # pixels of the input image
    assert result.instruction == asked
    assert result.pred_text == ("left" if (x1 + x2) / 2 < result.ori_shape[1] / 2 else "right")


def test_a_follow_up_is_read_as_the_question_it_stands_for_and_its_region_question_asked_on_its_own():
    history = [dict(user="<image> Is there a triangle?", assistant="yes")]
    sample = _sample("What colour is it?", history=history, task="vqa")
    [(row, question)] = build_question_grounding(dict()).rows([sample])
    assert row == 0 and question == GroundedQuestion(("the triangle",), "what colour is <region>?")
    QuestionGrounding.region_question(sample, question, [_grounded([[0, 0, 10, 10]], [0.9])])
    assert sample.history is None and task_of_instruction(sample.instruction).name == "region_vqa"
    QuestionGrounding.restore(sample)
    assert sample.instruction == "What colour is it?" and sample.history == history
