"""CanonicalFormMetric on hand-scored predictions."""
import json

import pytest

from visionllm.evaluation import CanonicalFormMetric, score_canonical


@pytest.mark.parametrize("prediction, reference, correct, right_form", [
    ("detection: hexagon; star", "detection: star; hexagon", True, True),      # a set: order free
    ("detection: star", "detection: star; hexagon", False, True),               # a category missing
    ("segmentation: star; hexagon", "detection: star; hexagon", False, True),   # boxes vs polygons: both structured
    ("grounding: the red square", "grounding: the red square", True, True),
    ("grounding: The  red square", "grounding: the red square", True, True),    # case and spacing
    ("grounding: the blue square", "grounding: the red square", False, True),
    ("vqa: how many stars are there?", "grounding: the red square", False, False),
    ("vqa: how many stars are there?", "vqa: how many stars are there?", True, True),
    ("vqa: how many circles are there?", "vqa: how many stars are there?", False, True),
    ("caption", "vqa: how many stars are there?", False, True),                  # text either way
    ("caption", "caption", True, True),
    ("unsupported", "unsupported", True, True),
    ("caption", "unsupported", False, False),
    ("a red star", "caption", False, False),                                    # unreadable
])
def test_scores(prediction, reference, correct, right_form):
    score = score_canonical(prediction, reference)
    assert (score["correct"], score["right_form"]) == (correct, right_form)


def test_a_reference_that_cannot_be_read_is_an_error():
    with pytest.raises(ValueError):
        score_canonical("caption", "nonsense")


def test_metric_per_task_and_overall():
    pairs = [  # (prediction, reference): detection 1/2, vqa 1/1, caption 0/1, unsupported 1/2
        ("detection: star", "detection: star"), ("caption", "detection: circle"),
        ("vqa: is there a red star?", "vqa: is there a red star?"),
        ("garbled", "caption"),
        ("unsupported", "unsupported"), ("caption", "unsupported"),
    ]
    metric = CanonicalFormMetric()
    metric.dataset_meta = {}
    metric.process(None, [dict(task="request", pred_text=p, target_text=r) for p, r in pairs]
                   + [dict(task="caption", pred_text="x", gt_texts=["y"])])  # other tasks are not scored
    result = metric.evaluate(len(pairs))
    assert result["request/detection_accuracy"] == pytest.approx(0.5)
    assert result["request/vqa_accuracy"] == pytest.approx(1.0)
    assert result["request/caption_accuracy"] == pytest.approx(0.0)
    assert result["request/unsupported_accuracy"] == pytest.approx(0.5)
    assert result["request/accuracy"] == pytest.approx(3 / 6)
    # right form: det ok, det->caption no, vqa ok, garbled no, unsupported ok, caption for unsupported no
    assert result["request/right_form"] == pytest.approx(3 / 6)
    assert result["request/parsed"] == pytest.approx(5 / 6)


def test_dump_names_each_request_with_its_score(tmp_path):
    metric = CanonicalFormMetric(outfile_prefix=str(tmp_path / "run"))
    metric.dataset_meta = {}
    metric.process(None, [
        dict(task="request", img_id=7, instruction="<image> Rewrite this request as a task: find the stars",
             pred_text="caption", target_text="detection: star"),
        dict(task="request", img_id=8, instruction="<image> Rewrite this request as a task: hi",
             pred_text="unsupported", target_text="unsupported")])
    metric.evaluate(2)
    records = json.loads((tmp_path / "run.request.json").read_text())
    assert [(r["image_id"], r["prediction"], r["reference"], r["task"], r["correct"], r["right_form"])
            for r in records] == [(7, "caption", "detection: star", "detection", False, False),
                                  (8, "unsupported", "unsupported", "unsupported", True, True)]
    assert records[0]["instruction"].endswith("find the stars")
