"""Captions grounded in the model's own detections (visionllm.models.caption_grounding): which
samples, their detection samples, the words banned, the captions composed, and the whole model's
passes."""
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from visionllm.models.caption_grounding import CaptionGrounding, build_caption_grounding
from visionllm.tasks import read_instruction

NAMES = ["circle", "star", "box"]


def _sample(instruction, **meta):
    sample = DetDataSample()
    sample.set_metainfo(dict(instruction=instruction, img_shape=(64, 96), **meta))
    return sample


def test_arguments_are_checked():
    assert build_caption_grounding(None) is None
    with pytest.raises(ValueError, match="at least one category"):
        CaptionGrounding([])
    with pytest.raises(ValueError, match="distinct"):
        CaptionGrounding(["star", "star"])
    with pytest.raises(ValueError, match="score_threshold"):
        CaptionGrounding(NAMES, score_threshold=1.5)
    with pytest.raises(ValueError, match="empty_caption"):
        CaptionGrounding(NAMES, compose=True, empty_caption=" ")
    with pytest.raises(ValueError, match="count_noun"):
        CaptionGrounding(NAMES, compose=True, count_noun="")


def test_only_captions_are_grounded_and_their_detection_sample_asks_for_every_category():
    grounding = CaptionGrounding(NAMES, score_threshold=0.4)
    samples = [_sample("<image> Write a short caption for the image."),
               _sample("<image> Answer the question: how many stars are there?"),
               _sample('Detect {"star": <c0>} in <image>. Answer as a list of (c, x1, y1, x2, y2).'),
               _sample("Write a one-sentence caption for <image>.",
                       history=[dict(user="<image> What is it?", assistant="a star")])]
    assert grounding.rows(samples) == [0, 3]
    detect = grounding.detection_sample(samples[3])
    understood = read_instruction(detect.instruction)
    assert understood.task == "detection" and list(understood.categories) == NAMES
    assert detect.categories == NAMES and detect.category_ids == [0, 1, 2]
    assert detect.history is None and detect.score_thr == 0.4
    assert samples[3].instruction.startswith("Write a one-sentence caption") and samples[3].history  # untouched


def test_absent_words_are_the_undetected_categories_singular_and_plural():
    grounding = CaptionGrounding(NAMES, score_threshold=0.5)
    detected = _sample("x")
    detected.pred_instances = InstanceData(scores=torch.tensor([0.9, 0.49, 0.5, 0.2]),
                                           labels=torch.tensor([1, 0, 1, 2]))
    assert grounding.absent_words(detected) == ["box", "boxes", "circle", "circles"]
    detected.pred_instances = InstanceData(scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))
    assert grounding.absent_words(detected) == ["box", "boxes", "circle", "circles", "star", "stars"]


def _detected(scores, labels, boxes):
    detected = _sample("x")
    detected.pred_instances = InstanceData(scores=torch.tensor(scores), labels=torch.tensor(labels),
                                           bboxes=torch.tensor(boxes, dtype=torch.float32))
    return detected


def _answers(*texts):
    answers = []
    for text in texts:
        answer = _sample("x")
        answer.pred_text = text
        answers.append(answer)
    return answers


def test_a_composed_caption_lists_the_present_detections_left_to_right_with_their_colours():
    grounding = CaptionGrounding(NAMES, score_threshold=0.5, overlap_iou=0.5, compose=True, colours=["red", "blue"])
    caption = _sample("<image> Write a short caption for the image.", scale_factor=(2.0, 0.5))
    detected = _detected([0.9, 0.8, 0.7, 0.3, 0.6, 0.95],
                         [1, 0, 1, 2, 1, 2],
                         [[50, 0, 60, 10], [0, 0, 10, 10], [20, 0, 30, 10], [70, 0, 80, 10],
                          [51, 0, 61, 10],  # the same object as the first star, scoring lower: not present
                          [30, 30, 42, 40]])
    asked = grounding.colour_questions(caption, detected)
    # left to right by box centre: circle (5), star (25), box (36), star (55)
    assert caption.grounded_labels == [0, 1, 2, 1]
    assert caption.grounded_boxes == [[0, 0, 10, 10], [20, 0, 30, 10], [30, 30, 42, 40], [50, 0, 60, 10]]
    assert len(asked) == 4 and all("what colour is <region>?" in a.instruction for a in asked)
    assert asked[2].regions == [[60.0, 15.0, 84.0, 20.0]]  # its box, in the resized image's pixels
    assert caption.instruction.startswith("<image> Write a short caption")  # asked as before

    grounding.write(caption, _answers("Red.", "blue", "green", "blue"))  # green: not a colour it names
    assert caption.composed_answer == "a red circle, two blue stars and a box"
    assert caption.grounded_names == ["red circle", "blue star", "box", "blue star"]  # each box as listed
    grounding.write(caption, _answers("blue", "blue", "blue", "red"))
    assert caption.composed_answer == "a blue circle, a blue star, a blue box and a red star"

    # a colour said with less than colour_threshold probability is left out
    grounding.colour_threshold = 0.6
    answers = _answers("red", "blue", "blue", "blue")
    for answer, probability in zip(answers, (0.59, 0.6, 0.9, 0.2)):
        answer.pred_text_probability = probability
    grounding.write(caption, answers)
    assert caption.composed_answer == "a circle, a blue star, a blue box and a star"


def test_a_composed_caption_without_colours_asks_nothing_and_an_empty_image_gets_the_empty_caption():
    grounding = CaptionGrounding(NAMES, score_threshold=0.5, compose=True, empty_caption="nothing at all")
    caption = _sample("<image> Write a short caption for the image.")
    assert grounding.colour_questions(caption, _detected([0.9, 0.6, 0.7], [1, 1, 0],
                                                         [[40, 0, 50, 9], [0, 0, 9, 9], [20, 0, 30, 9]])) == []
    grounding.write(caption, [])
    assert caption.composed_answer == "two stars and a circle"  # first seen left to right, then counted
    assert caption.grounded_names == ["star", "circle", "star"]
    assert grounding.colour_questions(caption, _detected([0.4], [1], [[0, 0, 9, 9]])) == []
    grounding.write(caption, [])
    assert caption.composed_answer == "nothing at all" and caption.grounded_names == []


@pytest.mark.parametrize("instruction, caption, colour_pass", [
    ("<image> Write a short caption for the image.", "a red circle, two blue stars and a box", True),
    ("<image> Write a caption that only says how many objects there are.", "four shapes", False),
    ("Caption <image>, but leave out the colours.", "a circle, two stars and a box", False),
    ("<image> Caption the image with a count of the shapes followed by the full list.",
     "four shapes: a red circle, two blue stars and a box", True),
    ("<image> Describe where one shape is relative to another.", "a red circle to the left of a blue star", True),
])
def test_a_composed_caption_follows_the_style_the_instruction_asks_for(instruction, caption, colour_pass):
    grounding = CaptionGrounding(NAMES, score_threshold=0.5, compose=True, colours=["red", "blue"],
                                 count_noun="shape")
    sample = _sample(instruction, ori_shape=(64, 100))
    detected = _detected([0.9, 0.8, 0.7, 0.6], [0, 1, 2, 1],
                         [[0, 0, 10, 10], [20, 0, 30, 10], [30, 30, 42, 40], [50, 0, 60, 10]])
    asked = grounding.colour_questions(sample, detected)
    assert bool(asked) == colour_pass  # a caption without colours asks none
    grounding.write(sample, _answers("red", "blue", "green", "blue") if asked else [])
    assert sample.composed_answer == caption


def test_a_composed_relation_needs_the_two_ends_apart_else_it_lists():
    grounding = CaptionGrounding(NAMES, score_threshold=0.5, compose=True, relation_margin=0.1)
    for width, caption in [(100, "a circle to the left of a star"), (200, "a circle and a star")]:
        sample = _sample("<image> Describe where one shape is relative to another.", ori_shape=(64, width))
        grounding.colour_questions(sample, _detected([0.9, 0.8], [0, 1], [[0, 0, 10, 10], [11, 0, 21, 10]]))
        grounding.write(sample, [])  # centres 11 pixels apart: more than 10 % of 100, less than of 200
        assert sample.composed_answer == caption
    # the rightmost of another kind, among those apart from the leftmost; else the rightmost
    boxes = [[0, 0, 10, 10], [5, 0, 15, 10], [30, 0, 40, 10], [60, 0, 70, 10]]
    for labels, caption in [([0, 1, 1, 0], "a circle to the left of a star"),
                            ([0, 1, 0, 0], "a circle to the left of a circle"),
                            ([0, 1, 0, 1], "a circle to the left of a star")]:
        sample = _sample("<image> Describe where one shape is relative to another.", ori_shape=(64, 100))
        grounding.colour_questions(sample, _detected([0.9] * 4, labels, boxes))
        grounding.write(sample, [])  # the second box (a star) lies too close to the first
        assert sample.composed_answer == caption


@pytest.mark.slow
def test_the_model_detects_before_it_captions_and_bans_what_it_did_not_find(tmp_path, monkeypatch, tiny_llm_dir,
                                                                          tiny_workspace):  # noqa: F811
    from tiny_model import build_tiny_model

    cfg, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    model.eval()
    model.task_decoder.generate_format = False  # untrained: the format comes from the instruction
    caption = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == "caption")
    question = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == "vqa")
    names = list(test_set.datasets[0].metainfo["classes"])

    # The detection the grounding must run, done by hand with the model as it is (no grounding).
    plain = CaptionGrounding(names, score_threshold=0.0)  # every slot decoded
    data = model.data_preprocessor(pseudo_collate([caption]), False)
    with torch.no_grad():
        [found] = model(data["inputs"], [plain.detection_sample(data["data_samples"][0])], mode="predict")
    scores = torch.zeros(len(names))
    for score, label in zip(found.pred_instances.scores.tolist(), found.pred_instances.labels.tolist()):
        scores[label] = max(scores[label], score)
    threshold = float(scores.max())  # the best-scoring category found, the others not
    expected_absent = [name for name, score in zip(names, scores.tolist()) if score < threshold]
    assert threshold > 0 and len(expected_absent) == len(names) - 1

    model.caption_grounding = CaptionGrounding(names, score_threshold=threshold)
    seen = {}
    generate = model.task_decoder.generate_text

    def spy(*args, banned_words=None, **kwargs):
        seen["banned"] = banned_words
        texts = generate(*args, banned_words=banned_words, **kwargs)
        seen["texts"] = texts
        return texts
    monkeypatch.setattr(model.task_decoder, "generate_text", spy)
    data = model.data_preprocessor(pseudo_collate([question, caption]), False)
    with torch.no_grad():
        results = model(**data, mode="predict")
    banned_question, banned_caption = seen["banned"]
    assert banned_question is None
    assert sorted(banned_caption) == sorted(w for name in expected_absent for w in (name, name + "s"))
    assert not set(results[1].pred_text.split()) & set(banned_caption)
    assert [r.task for r in results] == ["vqa", "caption"]  # the samples keep their own task


@pytest.mark.slow
def test_the_model_composes_its_caption_from_its_detections_and_their_colour_answers(
        tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):  # noqa: F811
    from tiny_model import build_tiny_model, item_for_untrained, predict_one, record_passes
    from visionllm.models.question_grounding import answer_words
    from visionllm.tasks import task_of_instruction

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    names = list(test_set.datasets[0].metainfo["classes"])
    asked = "<image> Write a short caption for the image."
    caption = item_for_untrained(model, test_set, asked, task="caption")
    passes = record_passes(model, monkeypatch)  # inner passes finish first
    # every slot of an untrained model present; colours: whatever it answers, so each is named
    model.caption_grounding = CaptionGrounding(names, score_threshold=0.0, compose=True, colours=["__none__"])
    seen_colours = {}
    write = model.caption_grounding.write

    def spy(sample, answered):
        seen_colours["said"] = [answer_words(a.pred_text) for a in answered]
        model.caption_grounding.colours = tuple(seen_colours["said"])
        write(sample, answered)
    monkeypatch.setattr(model.caption_grounding, "write", spy)
    generated = []
    generate = model.task_decoder.generate_text

    def generate_spy(embeds, instructions, **kwargs):
        generated.extend(instructions)
        return generate(embeds, instructions, **kwargs)
    monkeypatch.setattr(model.task_decoder, "generate_text", generate_spy)
    result = predict_one(model, caption)
    assert asked not in generated  # the composed caption is not generated as well
    (detection, [detected]), (colours, answered), (main, _) = passes
    assert read_instruction(detection[0]).task == "detection" and read_instruction(detection[0]).categories == names
    assert len(colours) == len(detected.pred_instances) > 0  # one colour question per detection
    assert all(task_of_instruction(c).name == "region_vqa" for c in colours)
    assert main == [asked] and result.instruction == asked and result.task == "caption"
    # the caption is the list of the detections' kinds, left to right, with the colours said
    centres = (detected.pred_instances.bboxes[:, 0] + detected.pred_instances.bboxes[:, 2]).tolist()
    order = sorted(range(len(centres)), key=lambda i: (centres[i], i))
    said = seen_colours["said"]
    phrases = [f"{said[k]} {names[int(detected.pred_instances.labels[i])]}".strip() for k, i in enumerate(order)]
    counts = {p: phrases.count(p) for p in phrases}
    from visionllm.utils.english import count_phrase, join
    assert result.pred_text == join(count_phrase(n, p) for p, n in counts.items())
    listed = detected.pred_instances.bboxes[order]
    assert torch.allclose(torch.tensor(result.grounded_boxes)[:, :2], listed[:, :2].float())  # its boxes, as listed
    assert result.grounded_names == phrases  # each named as the caption says it
