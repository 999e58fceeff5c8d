"""Region metrics against hand-computed cases: answer accuracy (overall and per question kind),
classification accuracy, region-caption shape / colour shares and BLEU / CIDEr."""
import pytest

from visionllm.evaluation import MultiTaskMetric, RegionCaptionMetric, RegionClassificationAccuracy, RegionVQAAccuracy
from visionllm.evaluation import region_answer_metric, region_caption_metric
from visionllm.evaluation.caption_scores import bleu


def _evaluate(metric, samples):
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_region_vqa_accuracy_overall_and_per_kind():
    samples = [
        dict(task="region_vqa", question="what colour is <region>?", pred_text="Red.", gt_texts=["red"]),  # right
        dict(task="region_vqa", question="what colour is <region>?", pred_text="blue", gt_texts=["red"]),  # wrong
        dict(task="region_vqa", question="what shape is <region>?", pred_text="a star", gt_texts=["star"]),  # right
        dict(task="region_vqa", question="is <region> left of <region>?", pred_text="no", gt_texts=["yes"]),  # wrong
        dict(task="region_vqa", question="is <region> above <region>?", pred_text="yes", gt_texts=["yes"]),  # right
        dict(task="vqa", question="how many?", pred_text="2", gt_texts=["2"]),  # another task: not scored
    ]
    result = _evaluate(RegionVQAAccuracy(), samples)
    assert result["accuracy"] == pytest.approx(300 / 5)
    assert result["colour_accuracy"] == pytest.approx(50.0)
    assert result["shape_accuracy"] == pytest.approx(100.0)
    assert result["relation_accuracy"] == pytest.approx(50.0)


def test_region_classification_accuracy():
    samples = [dict(task="region_classification", pred_text="Star", gt_texts=["star"]),
               dict(task="region_classification", pred_text="star circle", gt_texts=["star"]),
               dict(task="region_classification", pred_text="", gt_texts=["circle"]),
               dict(task="region_classification", pred_text="hexagon", gt_texts=["hexagon"])]
    assert _evaluate(RegionClassificationAccuracy(), samples) == {"accuracy": pytest.approx(50.0)}


def test_region_caption_shape_and_colour_shares():
    samples = [
        dict(task="region_caption", ann_id=1, pred_text="the big red star", gt_texts=["the big red star", "the star"]),
        # right shape, wrong colour
        dict(task="region_caption", ann_id=2, pred_text="a blue star", gt_texts=["the small red star"]),
        # the first shape named is the one said: circle, not the reference's star
        dict(task="region_caption", ann_id=3, pred_text="a green circle next to a star",
             gt_texts=["the medium green star on the left"]),
        dict(task="region_caption", ann_id=4, pred_text="something", gt_texts=["the small white hexagon"]),
    ]
    result = _evaluate(RegionCaptionMetric(), samples)
    assert result["Shape"] == pytest.approx(50.0)
    assert result["Colour"] == pytest.approx(50.0)
    assert result["ShapeColour"] == pytest.approx(25.0)
    refs = {i: s["gt_texts"] for i, s in enumerate(samples)}
    hyps = {i: s["pred_text"] for i, s in enumerate(samples)}
    assert result["BLEU-4"] == pytest.approx(100 * bleu(refs, hyps)[3])


def test_region_caption_exact_references_score_full_bleu_and_attributes():
    texts = ["the big red star on the left", "the small blue circle at the top", "the medium green square"]
    samples = [dict(task="region_caption", ann_id=i, pred_text=t, gt_texts=[t, "the shape"]) for i, t in enumerate(texts)]
    result = _evaluate(RegionCaptionMetric(), samples)
    assert result["BLEU-4"] == pytest.approx(100.0, abs=1e-3)
    assert result["CIDEr"] > 100.0  # CIDEr-D of exact matches (x10 scale) is far above 1
    assert result["Shape"] == result["Colour"] == result["ShapeColour"] == 100.0


def test_word_finder_takes_whole_words_longest_first():
    finder = region_caption_metric.WordFinder(["red", "dark red", "star"])
    assert finder.first("A dark red starfish") == "dark red"
    assert finder.first("a reddish starfish") is None
    assert region_answer_metric.question_kind("What color is <region>?") == "colour"


def test_multi_task_metric_takes_the_region_specs_default_metrics(tmp_path):
    metric = MultiTaskMetric(task_metrics=dict(region_caption=dict(), region_vqa=dict(), region_classification=dict()),
                             outfile_prefix=str(tmp_path / "out"))
    assert isinstance(metric.metrics["region_caption"], RegionCaptionMetric)
    assert isinstance(metric.metrics["region_vqa"], RegionVQAAccuracy)
    assert isinstance(metric.metrics["region_classification"], RegionClassificationAccuracy)
    metric.process({}, [dict(task="region_vqa", question_id=7, question="what colour is <region>?", pred_text="red",
                             gt_texts=["red"]),
                        dict(task="region_classification", pred_text="star", gt_texts=["circle"])])
    result = metric.evaluate(2)
    assert result["region_vqa/accuracy"] == 100.0 and result["region_classification/accuracy"] == 0.0
    assert not any(k.startswith("region_caption") for k in result)
    assert (tmp_path / "out_region_vqa.region_vqa.json").exists()
