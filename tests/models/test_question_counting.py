"""Count questions answered from the model's own detections (visionllm.models.question_counting):
which questions, what they count, the colour questions about each detection, and the whole
model's passes."""
from collections import Counter

import pytest

from mmdet.structures import DetDataSample
from predicted_samples import detections
from visionllm.models.question_counting import CountQuestion, QuestionCounting, build_question_counting
from visionllm.models.question_grounding import QuestionGrounding, answer_words
from visionllm.tasks import read_instruction, task_of_instruction

KINDS, COLOURS = ["circle", "star", "box"], ["red", "blue"]


def _sample(instruction, **meta):
    sample = DetDataSample()
    sample.set_metainfo(dict(instruction=instruction, img_shape=(64, 96), scale_factor=(0.5, 0.25), **meta))
    return sample


@pytest.mark.parametrize("question, expected", [
    ("how many stars are there?", CountQuestion(None, "star")),
    ("How many boxes can you see ?", CountQuestion(None, "box")),
    ("how many red circles are in the image?", CountQuestion("red", "circle")),
    ("how many blue shapes are there?", CountQuestion("blue", None)),
    ("how many things are in the picture?", CountQuestion(None, None)),
    ("how many objects does the image contain?", CountQuestion(None, None)),
    ("count the red things in the image.", CountQuestion("red", None)),
    ("Count the stars", CountQuestion(None, "star")),
    ("what is the number of circles?", CountQuestion(None, "circle")),
    ("how many stars?", CountQuestion(None, "star")),
    ("how many green stars are there?", None),  # not a colour the model names
    ("how many hexagons are there?", None),  # not a kind it detects
    ("how many of them are red?", None),
    ("how many big red stars are there?", None),
    ("is there a red star?", None),
    ("what color is the star?", None),
])
def test_count_questions_are_read_with_the_models_words(question, expected):
    counting = QuestionCounting(KINDS, colours=COLOURS)
    assert counting.read(question) == expected
    assert counting.read(f"<image> Answer the question: {question}") == expected


def test_only_count_questions_are_counted_and_their_detection_sample_asks_for_every_kind():
    assert build_question_counting(None) is None
    with pytest.raises(ValueError, match="at least one category"):
        build_question_counting(dict(categories=[]))
    counting = build_question_counting(dict(categories=KINDS, colours=COLOURS, score_threshold=0.4))
    samples = [_sample("<image> Answer the question: how many stars are there?"),
               _sample("<image> Write a short caption for the image."),
               _sample("<image> Answer the question: what color is the star?"),
               _sample("<image> Answer the question: count the red shapes.")]
    assert counting.rows(samples) == [(0, CountQuestion(None, "star")), (3, CountQuestion("red", None))]
    detect = counting.detection_sample(samples[0])
    understood = read_instruction(detect.instruction)
    assert understood.task == "detection" and list(understood.categories) == KINDS and detect.score_thr == 0.4
    assert samples[0].instruction.endswith("how many stars are there?")  # the asked sample is left as it was


def test_a_follow_up_count_is_read_as_the_question_it_stands_for():
    counting = QuestionCounting(KINDS, colours=COLOURS)
    history = [dict(user="<image> How many stars are there?", assistant="2")]
    samples = [_sample("And how many of them are red?", history=history),
               _sample("And how many of them are red?")]  # nothing to refer to
    assert counting.rows(samples) == [(0, CountQuestion("red", "star"))]


@pytest.mark.parametrize("question, count", [(CountQuestion(None, "star"), "2"), (CountQuestion(None, "circle"), "1"),
                                              (CountQuestion(None, "box"), "0"), (CountQuestion(None, None), "3")])
def test_a_count_is_the_number_of_detections_of_the_kind_at_or_above_the_threshold(question, count):
    counting = QuestionCounting(KINDS, score_threshold=0.5)
    sample = _sample("<image> Answer the question: how many?")
    detected = detections([[0, 0, 10, 10]] * 5, [1, 1, 0, 1, 2], [0.9, 0.5, 0.7, 0.49, 0.1])
    assert counting.count(sample, question, detected) == []
    sample.pred_text = "the LLM's own answer"
    QuestionGrounding.restore(sample)
    assert sample.pred_text == count
    assert len(sample.grounded_boxes) == int(count)
    kinds = ["star", "star", "circle"] if question.kind is None else [question.kind] * int(count)
    assert sample.grounded_names == kinds  # each counted box's kind


def test_a_colour_count_asks_each_detection_its_colour_and_counts_the_answers():
    counting = QuestionCounting(KINDS, colours=COLOURS, score_threshold=0.5)
    original = "<image> Answer the question: how many red stars are there?"
    sample = _sample(original)
    detected = detections([[0, 0, 10, 10], [20, 40, 60, 80], [8, 8, 8, 30], [0, 0, 5, 5]], [1, 0, 1, 1],
                         [0.9, 0.9, 0.6, 0.2])
    asked = counting.count(sample, CountQuestion("red", "star"), detected)
    assert [a.instruction for a in asked] == ["<image> Answer the question: what colour is <region>?"] * 2
    assert [a.regions for a in asked] == [[[0, 0, 5, 2.5]], [[4, 2, 4.5, 7.5]]]  # the two stars, with an area
    assert sample.instruction == original and "composed_answer" not in sample.metainfo
    assert sample.grounded_boxes == [[0, 0, 10, 10], [8, 8, 9, 30]]
    assert sample.grounded_names == ["star", "star"]
    for answers, count, boxes in [(["Red.", "blue"], "1", [[0, 0, 10, 10]]), (["red", "red"], "2", None),
                                  (["blue", "green"], "0", [])]:
        sample.set_metainfo(dict(grounded_boxes=[[0, 0, 10, 10], [8, 8, 9, 30]],  # as count() left them
                                 grounded_names=["star", "star"]))
        for colour, answer in zip(asked, answers):
            colour.pred_text = answer
        QuestionCounting.count_colours(sample, CountQuestion("red", "star"), asked)
        QuestionGrounding.restore(sample)
        assert sample.pred_text == count
        assert sample.grounded_boxes == ([[0, 0, 10, 10], [8, 8, 9, 30]] if boxes is None else boxes)
        assert sample.grounded_names == ["red star"] * int(count)
    none = _sample(original)
    assert counting.count(none, CountQuestion("red", "box"), detected) == [] and none.composed_answer == "0"


@pytest.mark.slow
def test_the_model_counts_its_own_detections_and_their_colour_answers(tmp_path, monkeypatch, tiny_llm_dir,
                                                                     tiny_workspace):
    from tiny_model import build_tiny_model, predict_one, record_passes, item_for_untrained

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    names = list(test_set.datasets[0].metainfo["classes"])
    # every detection slot counts (an untrained model scores low), colours of the words below
    model.question_counting = QuestionCounting(names, colours=["red"], score_threshold=0.0)
    asked = "<image> Answer the question: how many red shapes are there?"
    question = item_for_untrained(model, test_set, asked)
    passes = record_passes(model, monkeypatch)  # inner passes finish first
    result = predict_one(model, question)
    (detection, [detected]), (colours, answered), (main, _) = passes
    assert read_instruction(detection[0]).task == "detection" and read_instruction(detection[0]).categories == names
    assert len(colours) == len(detected.pred_instances) > 0  # one colour question per detection
    assert all(task_of_instruction(c).name == "region_vqa" and "what colour is <region>?" in c for c in colours)
    assert main == [asked] and result.instruction == asked
    said = [answer_words(a.pred_text) for a in answered]
    assert result.pred_text == str(said.count("red")) and len(result.grounded_boxes) == said.count("red")

    # counting the colour the model said most often: that many
    colour, times = Counter(said).most_common(1)[0]
    model.question_counting.colours = (colour,)
    monkeypatch.setattr(model.question_counting, "read",
                        lambda text: CountQuestion(colour, None) if text == asked else None)
    assert predict_one(model, question).pred_text == str(times) and times > 0
