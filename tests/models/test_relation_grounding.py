"""Relation questions answered through the model's own grounding (visionllm.models.relation_grounding):
which questions, their grounding samples, the region question they become, and the whole model's
two passes."""
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from visionllm.models.relation_grounding import RelationGrounding, build_relation_grounding, read_relation
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


def test_only_relation_questions_are_grounded_and_each_name_gets_a_grounding_sample():
    grounding = build_relation_grounding(dict())
    assert build_relation_grounding(None) is None
    samples = [_sample("<image> Answer the question: is the red star left of the blue circle?"),
               _sample("<image> Answer the question: how many stars are there?"),
               _sample('Find "the star left of the circle" in <image> and give (c, x1, y1, x2, y2).'),
               _sample("<image> Write a short caption for the image.")]
    rows = grounding.rows(samples)
    assert rows == [(0, ("the red star", "left", "the blue circle"))]
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


@pytest.mark.parametrize("word, asked", [("left", "left of"), ("right", "right of"), ("above", "above")])
def test_the_question_becomes_the_region_question_about_the_best_boxes(word, asked):
    original = f"<image> Answer the question: is the star {word} the circle?"
    sample = _sample(original)
    first = _grounded([[0, 0, 10, 10], [20, 40, 60, 80]], [0.2, 0.9])  # the better box is the second
    second = _grounded([[100, 8, 140, 8]], [0.5])  # no height: still a region with an area
    RelationGrounding.region_question(sample, ("the star", word, "the circle"), [first, second])
    assert task_of_instruction(sample.instruction).name == "region_vqa"
    assert f"is <region> {asked} <region>?" in sample.instruction
    assert sample.relation_boxes == [[20, 40, 60, 80], [100, 8, 140, 9]]  # pixels of the input image
    assert sample.regions == [[10, 10, 30, 20], [50, 2, 70, 2.25]]  # pixels of img_shape (scale_factor)
    RelationGrounding.restore(sample)
    assert sample.instruction == original and sample.regions is None


def test_a_name_not_found_leaves_the_question_as_asked():
    original = "<image> Answer the question: is the star left of the circle?"
    sample = _sample(original)
    RelationGrounding.region_question(sample, ("the star", "left", "the circle"),
                                      [_grounded([[0, 0, 10, 10]], [0.9]), _grounded(torch.zeros(0, 4), [])])
    assert sample.instruction == original and "regions" not in sample.metainfo
    RelationGrounding.restore(sample)
    assert sample.instruction == original


@pytest.mark.slow
def test_the_model_grounds_both_names_then_answers_the_region_question(tmp_path, monkeypatch, tiny_llm_dir,
                                                                        tiny_workspace):
    from tiny_model import build_tiny_model

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                             relation_grounding=dict())
    model.eval()
    model.task_decoder.generate_format = False  # untrained: the format comes from the instruction
    question = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == "vqa")
    asked = "<image> Answer the question: is the red star left of the blue circle?"
    question["data_samples"].set_metainfo(dict(instruction=asked))
    seen = []
    forward = model._forward

    def spy(inputs, samples, mode):
        seen.append([s.instruction for s in samples])
        return forward(inputs, samples, mode)
    monkeypatch.setattr(model, "_forward", spy)
    data = model.data_preprocessor(pseudo_collate([question]), False)
    with torch.no_grad():
        [result] = model(**data, mode="predict")
    # one grounding pass for both names, then the question
    assert [read_instruction(i).categories for i in seen[1]] == [["the red star"], ["the blue circle"]]
    assert result.instruction == asked and result.task == "vqa" and len(result.relation_boxes) == 2

    # the answer is the model's answer to the region question about the two boxes, asked directly
    model.relation_grounding = None
    direct = model.data_preprocessor(pseudo_collate([question]), False)
    w_scale, h_scale = direct["data_samples"][0].metainfo["scale_factor"][:2]
    direct["data_samples"][0].set_metainfo(dict(
        instruction="<image> Answer the question: is <region> left of <region>?",
        regions=[[x1 * w_scale, y1 * h_scale, x2 * w_scale, y2 * h_scale] for x1, y1, x2, y2 in result.relation_boxes]))
    with torch.no_grad():
        [answer] = model(**direct, mode="predict")
    assert answer.pred_text == result.pred_text
