"""Groundings checked against the model's own region answers
(visionllm.models.grounding_verification): which groundings, their checks, the candidates and the
replacement, and the whole model's passes."""
import pytest
import torch
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from visionllm.models.grounding_verification import (ExpressionWords, GroundingVerification,
                                                     build_grounding_verification, extreme_of, extreme_order)
from visionllm.models.question_grounding import answer_words
from visionllm.tasks import read_instruction, task_of_instruction

KINDS, COLOURS = ["circle", "star", "box"], ["red", "blue"]


def _grounding(expression, boxes, scores):
    sample = DetDataSample()
    sample.set_metainfo(dict(instruction=f'Find "{expression}" in <image> and give (c, x1, y1, x2, y2).',
                             img_shape=(64, 96), scale_factor=(0.5, 0.25)))
    sample.pred_instances = InstanceData(bboxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                         scores=torch.as_tensor(scores, dtype=torch.float32),
                                         labels=torch.zeros(len(scores), dtype=torch.long))
    return sample


def _answered(*answers):
    samples = []
    for answer in answers:
        sample = DetDataSample()
        sample.pred_text = answer
        samples.append(sample)
    return samples


@pytest.mark.parametrize("expression, expected", [
    ("the red star", ExpressionWords("red", "star")),
    ("the small blue box on the left", ExpressionWords("blue", "box", "left")),
    ("the red one", ExpressionWords("red", None)),
    ("the star", None),
    ("the green star", None),
    ("the leftmost star", ExpressionWords(None, "star", "left")),
    ("the big red circle", ExpressionWords("red", "circle", "big")),
    ("the leftmost thing", None),  # an extreme needs a kind to be read among
    ("the star left of the red box", ExpressionWords(None, "star", relation="left", anchor="the red box")),
    ("the red star above the blue box", ExpressionWords("red", "star", relation="top", anchor="the blue box")),
    ("the circle to the right of the box", ExpressionWords(None, "circle", relation="right", anchor="the box")),
    ("the star beneath the red one", ExpressionWords(None, "star", relation="bottom", anchor="the red one")),
    ("the star next to the red box", None),  # no side: the anchor's colour is not the referent's
    ("the star beneath it", None),  # an anchor naming nothing the model reads
    ("the thing left of the red box", None),  # a relation needs a kind to be read among
])
def test_expressions_with_a_colour_word_or_an_extreme_of_a_kind_are_checked(expression, expected):
    assert GroundingVerification(KINDS, COLOURS).words(expression) == expected


@pytest.mark.parametrize("expression, extreme", [
    ("the star on the left", "left"), ("the leftmost star", "left"), ("the star furthest to the left", "left"),
    ("the rightmost star", "right"), ("the star on the right", "right"), ("the highest star", "top"),
    ("the star at the top", "top"), ("the lowest star", "bottom"), ("the bottommost star", "bottom"),
    ("the large star", "big"), ("the biggest star", "big"), ("the little star", "small"), ("the star", None),
    ("the star to the left of the box", None), ("the star below the box", None), ("the star next to the box", None),
    ("the starlet", None), ("the smallest star", "small"),
])
def test_the_extreme_an_expression_places_its_referent_at(expression, extreme):
    assert extreme_of(expression) == extreme


def test_boxes_are_ordered_from_the_furthest_towards_the_extreme():
    boxes = torch.tensor([[10., 10, 20, 20], [0, 30, 30, 60], [40, 0, 44, 4]])  # centres (15,15) (15,45) (42,2)
    assert extreme_order(boxes, "left") == [0, 1, 2]  # a tie keeps the given order
    assert extreme_order(boxes, "right") == [2, 0, 1]
    assert extreme_order(boxes, "top") == [2, 0, 1]
    assert extreme_order(boxes, "bottom") == [1, 0, 2]
    assert extreme_order(boxes, "big") == [1, 0, 2]
    assert extreme_order(boxes, "small") == [2, 0, 1]


def _predicted_grounding(box):
    anchor = DetDataSample()
    anchor.pred_instances = InstanceData(bboxes=torch.tensor(box, dtype=torch.float32).reshape(-1, 4),
                                         scores=torch.ones(len(box)), labels=torch.zeros(len(box), dtype=torch.long))
    return anchor


def test_a_relation_grounds_its_anchor_and_becomes_the_best_detection_of_its_kind_beyond_it():
    verification = GroundingVerification(KINDS, COLOURS, score_threshold=0.5)
    sample = _grounding("the star left of the red box", [[0, 0, 10, 10]], [0.8])
    words = verification.words("the star left of the red box")
    assert verification.checks(sample, words) == [] and not verification.agrees([], words)
    [anchor] = verification.anchor_groundings(sample, words)
    understood = read_instruction(anchor.instruction)
    assert understood.task == "grounding" and list(understood.categories) == ["the red box"]
    assert verification.anchor_groundings(sample, verification.words("the leftmost star")) == []
    detected = DetDataSample()
    detected.pred_instances = InstanceData(  # stars centred at x 3, 30, 60, 85 and a circle at x 3
        bboxes=torch.tensor([[1., 1, 5, 5], [20, 20, 40, 40], [50, 50, 70, 70], [80, 0, 90, 9], [0, 30, 6, 39]]),
        scores=torch.tensor([0.9, 0.6, 0.95, 0.7, 0.9]), labels=torch.tensor([1, 1, 1, 1, 0]))
    box_at_50 = [_predicted_grounding([[45., 0, 55, 10]])]  # the anchor's box, centred at x 50
    chosen, asked = verification.candidates(sample, detected, words, box_at_50)
    # the stars left of the anchor, best first; no colour named, nothing asked
    assert [c.bboxes[0].tolist() for c in chosen] == [[1, 1, 5, 5], [20, 20, 40, 40]] and asked == []
    verification.replace(sample, chosen, asked, words)
    assert sample.pred_instances.bboxes.tolist() == [[1, 1, 5, 5]]
    right = verification.words("the star to the right of the red box")
    assert [c.bboxes[0].tolist() for c in verification.candidates(sample, detected, right, box_at_50)[0]] == [
        [50, 50, 70, 70], [80, 0, 90, 9]]
    below = verification.words("the star below the red box")
    assert [c.bboxes[0].tolist() for c in verification.candidates(sample, detected, below, box_at_50)[0]] == [
        [50, 50, 70, 70], [20, 20, 40, 40]]  # centres below y 5
    # an anchor not found: no candidate, the grounding stays
    assert verification.candidates(sample, detected, words, [_predicted_grounding([])])[0] == []
    assert verification.candidates(sample, detected, words, [])[0] == []


def test_an_extreme_becomes_the_detection_of_its_kind_furthest_that_way_without_a_check():
    verification = GroundingVerification(KINDS, COLOURS, score_threshold=0.5)
    sample = _grounding("the leftmost star", [[0, 0, 10, 10]], [0.8])
    words = verification.words("the leftmost star")
    assert verification.checks(sample, words) == [] and not verification.agrees([], words)
    detected = DetDataSample()
    detected.pred_instances = InstanceData(
        bboxes=torch.tensor([[1., 1, 5, 5], [20, 20, 40, 40], [50, 50, 70, 70], [80, 0, 90, 9], [0, 30, 9, 39]]),
        scores=torch.tensor([0.9, 0.6, 0.95, 0.7, 0.3]), labels=torch.tensor([0, 1, 1, 1, 1]))
    chosen, asked = verification.candidates(sample, detected, words)
    # the stars scoring >= 0.5, leftmost first; no colour named, so nothing is asked
    assert [c.bboxes[0].tolist() for c in chosen] == [[20, 20, 40, 40], [50, 50, 70, 70], [80, 0, 90, 9]]
    assert asked == []
    verification.replace(sample, chosen, asked, words)
    assert sample.pred_instances.bboxes.tolist() == [[20, 20, 40, 40]] and sample.replaced_grounding == [0, 0, 10, 10]
    # with a colour: the furthest of those whose colour answer is the expression's
    red = _grounding("the rightmost red star", [[0, 0, 10, 10]], [0.8])
    words = verification.words("the rightmost red star")
    chosen, asked = verification.candidates(red, detected, words)
    assert [c.bboxes[0].tolist() for c in chosen] == [[80, 0, 90, 9], [50, 50, 70, 70], [20, 20, 40, 40]]
    assert len(asked) == 3 and all("colour" in a.instruction for a in asked)
    verification.replace(red, chosen, _answered("blue", "red", "red"), words)
    assert red.pred_instances.bboxes.tolist() == [[50, 50, 70, 70]]
    # no star detected: the grounding stays
    none = _grounding("the leftmost box", [[0, 0, 10, 10]], [0.8])
    chosen, _ = verification.candidates(none, detected, verification.words("the leftmost box"))
    verification.replace(none, chosen, [], verification.words("the leftmost box"))
    assert chosen == [] and none.pred_instances.bboxes.tolist() == [[0, 0, 10, 10]]


def test_only_predicted_groundings_with_a_colour_or_an_extreme_and_a_box_are_checked():
    assert build_grounding_verification(None) is None
    verification = build_grounding_verification(dict(categories=KINDS, colours=COLOURS))
    question = _grounding("x", [], [])
    question.set_metainfo(dict(instruction="<image> Answer the question: is there a red star?"))
    predicted = [_grounding("the red star", [[0, 0, 10, 10]], [0.9]), _grounding("the star", [[0, 0, 10, 10]], [0.9]),
                 _grounding("the blue box", [], []), question, _grounding("the big box", [[0, 0, 10, 10]], [0.9])]
    assert verification.rows(predicted) == [(0, ExpressionWords("red", "star")), (4, ExpressionWords(None, "box", "big"))]


def test_the_best_box_is_asked_its_colour_and_shape():
    verification = GroundingVerification(KINDS, COLOURS)
    sample = _grounding("the red star", [[0, 0, 10, 10], [20, 40, 60, 80]], [0.3, 0.9])
    checks = verification.checks(sample, ExpressionWords("red", "star"))
    assert [c.instruction for c in checks] == ["<image> Answer the question: what colour is <region>?",
                                              "<image> Answer the question: what shape is <region>?"]
    assert all(c.regions == [[10, 10, 30, 20]] for c in checks)
    assert len(verification.checks(sample, ExpressionWords("red", None))) == 1
    assert verification.agrees(_answered("Red.", "star"), ExpressionWords("red", "star"))
    assert not verification.agrees(_answered("red", "circle"), ExpressionWords("red", "star"))
    assert not verification.agrees(_answered("blue"), ExpressionWords("red", None))


def test_a_disagreeing_grounding_becomes_the_best_detection_of_its_kind_with_its_colour():
    verification = GroundingVerification(KINDS, COLOURS, score_threshold=0.5)
    sample = _grounding("the red star", [[0, 0, 10, 10]], [0.8])
    detected = DetDataSample()
    detected.pred_instances = InstanceData(
        bboxes=torch.tensor([[1., 1, 5, 5], [20, 20, 40, 40], [50, 50, 70, 70], [80, 0, 90, 9], [0, 30, 9, 39]]),
        scores=torch.tensor([0.9, 0.6, 0.95, 0.7, 0.3]), labels=torch.tensor([0, 1, 1, 1, 1]))
    chosen, asked = verification.candidates(sample, detected, ExpressionWords("red", "star"))
    # the stars scoring >= 0.5, best first
    assert [c.bboxes[0].tolist() for c in chosen] == [[50, 50, 70, 70], [80, 0, 90, 9], [20, 20, 40, 40]]
    assert [a.regions for a in asked] == [[[25, 12.5, 35, 17.5]], [[40, 0, 45, 2.25]], [[10, 5, 20, 10]]]
    verification.replace(sample, chosen, _answered("blue", "red", "red"), ExpressionWords("red", "star"))
    assert sample.pred_instances.bboxes.tolist() == [[80, 0, 90, 9]]
    assert sample.pred_instances.scores.tolist() == pytest.approx([0.7])
    assert sample.replaced_grounding == [0, 0, 10, 10]
    kept = _grounding("the red star", [[0, 0, 10, 10]], [0.8])
    verification.replace(kept, chosen, _answered("blue", "blue", "pink"), ExpressionWords("red", "star"))
    assert kept.pred_instances.bboxes.tolist() == [[0, 0, 10, 10]] and "replaced_grounding" not in kept.metainfo


@pytest.mark.slow
def test_the_model_replaces_a_grounding_its_region_answers_disagree_with(tmp_path, monkeypatch, tiny_llm_dir,
                                                                        tiny_workspace):
    from tiny_model import build_tiny_model, item_for_untrained, predict_one, record_passes

    _, model, _, test_set = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    names = list(test_set.datasets[0].metainfo["classes"])
    item = item_for_untrained(model, test_set, 'Find "the zzz thing" in <image> and give (c, x1, y1, x2, y2).',
                              task="grounding")
    # every detection is a candidate (an untrained model scores low); the expression's colour
    # word is one the untrained model never says, so the check disagrees and no candidate agrees
    model.grounding_verification = GroundingVerification(names, colours=["zzz"], score_threshold=0.0)
    passes = record_passes(model, monkeypatch)
    kept = predict_one(model, item)
    (checks, _), (detection, [detected]), (colours, answered), (main, _) = passes
    assert [task_of_instruction(c).name for c in checks] == ["region_vqa"] and "colour" in checks[0]
    assert read_instruction(detection[0]).task == "detection"
    assert len(colours) == len(detected.pred_instances) > 0  # one colour question per candidate
    assert "replaced_grounding" not in kept.metainfo

    # the colour the model says about the best candidate: the grounding becomes that candidate
    said = answer_words(answered[0].pred_text)
    monkeypatch.setattr(model.grounding_verification, "words", lambda expression: ExpressionWords(said, None))
    monkeypatch.setattr(model.grounding_verification, "agrees", lambda answers, words: False)
    replaced = predict_one(model, item)
    best = detected.pred_instances[int(torch.argmax(detected.pred_instances.scores))]
    assert replaced.pred_instances.bboxes[0].tolist() == pytest.approx(best.bboxes[0].tolist())
    assert replaced.replaced_grounding == pytest.approx(GroundingVerification.best_box(kept).tolist())

    # "the leftmost <kind>" (a kind the model detected in this image): no check and no colour
    # question, one detection pass, and the grounding becomes the leftmost detection of the kind
    kind = int(detected.pred_instances.labels[0])
    model.grounding_verification = GroundingVerification(names, colours=["zzz"], score_threshold=0.0)
    leftmost = item_for_untrained(model, test_set, f'Find "the leftmost {names[kind]}" in <image> and give '
                                  '(c, x1, y1, x2, y2).', task="grounding")
    del passes[:]
    result = predict_one(model, leftmost)
    (detection, [detected]), (main, _) = passes
    assert read_instruction(detection[0]).task == "detection" and "leftmost" in main[0]
    of_kind = detected.pred_instances[detected.pred_instances.labels == kind]
    centres = (of_kind.bboxes[:, 0] + of_kind.bboxes[:, 2]) / 2
    assert result.pred_instances.bboxes[0].tolist() == pytest.approx(of_kind.bboxes[int(torch.argmin(centres))].tolist())

    # "the <kind> left / right of the <other kind>": the anchor grounded first, then the
    # detections; the grounding becomes the best-scoring detection of the kind beyond the anchor
    # (on one of the two sides there is one: the kind was detected)
    other = names[(kind + 1) % len(names)]
    replaced_sides = []
    for side in ("left", "right"):
        item = item_for_untrained(model, test_set, f'Find "the {names[kind]} {side} of the {other}" in <image> and '
                                  'give (c, x1, y1, x2, y2).', task="grounding")
        del passes[:]
        result = predict_one(model, item)
        (anchor, [anchored]), (detection, [detected]), (main, _) = passes
        assert read_instruction(anchor[0]).task == "grounding" and read_instruction(anchor[0]).categories == [
            f"the {other}"]
        assert read_instruction(detection[0]).task == "detection" and f"{side} of" in main[0]
        ax = float(anchored.pred_instances.bboxes[int(torch.argmax(anchored.pred_instances.scores)), 0::2].mean())
        pred = detected.pred_instances
        x = (pred.bboxes[:, 0] + pred.bboxes[:, 2]) / 2
        beyond = (pred.labels == kind) & ((x < ax) if side == "left" else (x > ax))
        if beyond.any():
            best = pred.bboxes[beyond][int(torch.argmax(pred.scores[beyond]))]
            assert result.pred_instances.bboxes[0].tolist() == pytest.approx(best.tolist())
            replaced_sides.append(side)
        else:
            assert "replaced_grounding" not in result.metainfo
    assert replaced_sides
