"""Metrics on hand-computed cases, and COCO AP equal to pycocotools on the dumped json."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from shapely.geometry import Polygon

from visionllm.evaluation import (CaptionMetric, MultiTaskMetric, RefCocoMetric, VisionLLMCocoMetric, VQAAccuracy,
                                  normalize_answer, vqa_accuracy)
from visionllm.evaluation.caption_scores import bleu, cider_d
from visionllm.evaluation.coco_metric import STAT_NAMES


# ----------------------------------------------------------------------------- COCO
@pytest.fixture
def coco_gt(tmp_path):
    rng = np.random.default_rng()
    images, anns = [], []
    for img_id in range(1, 6):
        images.append(dict(id=img_id, file_name=f"{img_id}.png", width=80, height=60))
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 40, 2)
            w, h = rng.uniform(8, 30, 2)
            w, h = min(w, 79 - x), min(h, 59 - y)
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=int(rng.choice([2, 5])), iscrowd=0,
                             bbox=[x, y, w, h], area=w * h,
                             segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    data = dict(images=images, annotations=anns, categories=[dict(id=2, name="b"), dict(id=5, name="e")])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, data


def _predictions(data, noise, rng):
    samples = []
    cat_to_label = {2: 0, 5: 1}
    for img in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
        boxes, labels, polys = [], [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            box = np.asarray([x, y, x + w, y + h]) + rng.normal(0, noise, 4)
            boxes.append(box)
            labels.append(cat_to_label[a["category_id"]])
            polys.append([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
        if noise:  # plus a false positive
            boxes.append([1, 1, 10, 10])
            labels.append(0)
            polys.append([[1, 1], [10, 1], [10, 10], [1, 10]])
        n = len(boxes)
        samples.append(dict(img_id=img["id"], ori_shape=(img["height"], img["width"]), task="segmentation",
                            pred_instances=dict(bboxes=torch.tensor(np.asarray(boxes), dtype=torch.float32),
                                                scores=torch.rand(n), labels=torch.tensor(labels),
                                                polygons=torch.tensor(np.asarray(polys), dtype=torch.float32))))
    return samples


def test_coco_metric_perfect_predictions_score_one(coco_gt):
    path, data = coco_gt
    metric = VisionLLMCocoMetric(ann_file=str(path), metric=("bbox", "segm"))
    metric.process({}, _predictions(data, 0.0, np.random.default_rng()))
    result = metric.compute_metrics(metric.results)
    assert result["bbox_mAP"] == pytest.approx(1.0, abs=1e-12) and result["segm_mAP"] == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- COCO on a subset
@pytest.fixture
def coco_subset_gt(tmp_path):
    """12 images whose ids are shuffled against the file order (the README's subsets are the
    first N images of the file), each with 1-3 triangles / quadrilaterals of integer vertices."""
    rng = np.random.default_rng()
    ids = [int(i) for i in rng.permutation(12) * 7 + 3]
    images, anns = [], []
    for img_id in ids:
        images.append(dict(id=img_id, file_name=f"{img_id}.png", width=72, height=56))
        for _ in range(int(rng.integers(1, 4))):
            x, y = (int(v) for v in rng.integers(0, 36, 2))
            w, h = (int(v) for v in rng.integers(8, 20, 2))
            if rng.random() < 0.5:
                points = [x, y, x + w, y, x + w, y + h, x, y + h]
            else:  # a triangle with its apex somewhere along the top edge
                apex = x + int(rng.integers(0, w + 1))
                points = [apex, y, x + w, y + h, x, y + h]
            area = float(Polygon(np.reshape(points, (-1, 2))).area)
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=int(rng.choice([2, 5])), iscrowd=0,
                             bbox=[x, y, w, h], area=area, segmentation=[points]))
    data = dict(images=images, annotations=anns, categories=[dict(id=2, name="b"), dict(id=5, name="e")])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, data


def _model_outputs_on(dataset, noise, rng):
    """What a model would return for each sample of ``dataset``: its ground truth (jittered by
    ``noise`` pixels, plus a false positive when noisy) as boxes and polygons."""
    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        boxes, labels, polygons = [], [], []
        for inst in info["instances"]:
            shift = rng.normal(0, noise, 2) if noise else np.zeros(2)
            points = np.asarray(inst["mask"][0], dtype=np.float64).reshape(-1, 2) + shift
            points = np.concatenate([points, points[:1]])[:4] if len(points) == 3 else points  # K = 4 for all
            boxes.append(np.asarray(inst["bbox"]) + np.tile(shift, 2))
            labels.append(inst["bbox_label"])
            polygons.append(points)
        if noise:
            boxes.append([1.0, 1.0, 9.0, 9.0])
            labels.append(0)
            polygons.append(np.asarray([[1, 1], [9, 1], [9, 9], [1, 9]], dtype=np.float64))
        n = len(boxes)
        samples.append(dict(img_id=info["img_id"], ori_shape=(info["height"], info["width"]), task="segmentation",
                            pred_instances=dict(bboxes=torch.tensor(np.asarray(boxes), dtype=torch.float32),
                                                scores=torch.rand(n), labels=torch.tensor(labels),
                                                polygons=torch.tensor(np.stack(polygons), dtype=torch.float32))))
    return samples


def _pycocotools_stats(gt_path, samples, img_ids, iou_type):
    """COCOeval run here on result records built from ``samples`` (independently of the metric)."""
    from pycocotools import mask as mask_utils
    gt = COCO(str(gt_path))
    cat_ids = sorted(gt.getCatIds())
    records = []
    for sample in samples:
        h, w = sample["ori_shape"]
        pred = sample["pred_instances"]
        for box, score, label, poly in zip(pred["bboxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(),
                                           pred["polygons"].double().numpy()):
            record = dict(image_id=sample["img_id"], category_id=cat_ids[label], score=score)
            if iou_type == "bbox":
                record["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                record["segmentation"] = mask_utils.frPyObjects([poly.reshape(-1).tolist()], h, w)[0]
            records.append(record)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(records), iou_type)
        ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_coco_ap_on_an_image_subset_equals_pycocotools_on_that_subset(coco_subset_gt):
    """The README's subsets: ``dataset.indices=N`` (first N images of the file) in the test
    config; the metric's AP must be pycocotools' AP on exactly those images."""
    from visionllm.datasets.coco_instances import CocoInstancesDataset
    path, data = coco_subset_gt
    first_five = [img["id"] for img in data["images"][:5]]
    dataset = CocoInstancesDataset(ann_file=str(path), task="segmentation", check_image_files=False, pipeline=[],
                                   indices=5, serialize_data=False)
    assert [dataset.get_data_info(i)["img_id"] for i in range(len(dataset))] == first_five
    samples = _model_outputs_on(dataset, 1.5, np.random.default_rng())
    metric = VisionLLMCocoMetric(ann_file=str(path), metric=("bbox", "segm"))
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    for iou_type in ("bbox", "segm"):
        expected = _pycocotools_stats(path, samples, first_five, iou_type)
        assert [result[f"{iou_type}_{name}"] for name in STAT_NAMES] == pytest.approx(list(expected[:6]), abs=1e-12)
        assert 0 < expected[0] < 1
        # Discriminating: on all 12 images (7 of them with objects but without predictions) recall
        # is capped below 1, so AP is lower; by how much depends on the random shares of objects.
        everywhere = _pycocotools_stats(path, samples, [img["id"] for img in data["images"]], iou_type)
        assert everywhere[0] < expected[0] - 1e-3


def test_coco_ap_of_perfect_predictions_on_a_subset_is_one(coco_subset_gt):
    from visionllm.datasets.coco_instances import CocoInstancesDataset
    path, _ = coco_subset_gt
    dataset = CocoInstancesDataset(ann_file=str(path), task="segmentation", check_image_files=False, pipeline=[],
                                   indices=4, serialize_data=False)
    metric = VisionLLMCocoMetric(ann_file=str(path), metric=("bbox", "segm"))
    metric.process({}, _model_outputs_on(dataset, 0.0, np.random.default_rng()))
    result = metric.compute_metrics(metric.results)
    assert result["bbox_mAP"] == pytest.approx(1.0, abs=1e-12) and result["segm_mAP"] == pytest.approx(1.0, abs=1e-12)
    assert result["bbox_mAP_75"] == pytest.approx(1.0, abs=1e-12) and result["segm_mAP_75"] == pytest.approx(1.0, abs=1e-12)


def test_coco_metric_equals_pycocotools_on_dump(coco_gt, tmp_path):
    path, data = coco_gt
    metric = VisionLLMCocoMetric(ann_file=str(path), metric=("bbox", "segm"), outfile_prefix=str(tmp_path / "res"))
    metric.process({}, _predictions(data, 2.0, np.random.default_rng()))
    result = metric.compute_metrics(metric.results)
    gt = COCO(str(path))
    for iou_type in ("bbox", "segm"):
        records = json.load(open(tmp_path / f"res.{iou_type}.json"))
        assert all(r["category_id"] in (2, 5) for r in records)
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(records), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert result[f"{iou_type}_mAP"] == pytest.approx(ev.stats[0])
        assert result[f"{iou_type}_mAP_50"] == pytest.approx(ev.stats[1])
        assert 0 < ev.stats[0] < 1


# ----------------------------------------------------------------------------- grounding
def test_refcoco_precision_in_original_coordinates():
    rng = np.random.default_rng()
    scale = float(rng.uniform(0.5, 3.0))
    gt_ori = np.asarray([10.0, 20.0, 50.0, 60.0])  # 40 x 40
    good = gt_ori + [0, 0, 0, -10]                   # IoU 30/40 = 0.75
    bad = gt_ori + [0, 0, -25, 0]                    # IoU 15/40 = 0.375
    samples = []
    for pred, extra in ((good, None), (bad, None), (good, bad)):
        boxes = [pred] if extra is None else [extra, pred]
        scores = [1.0] if extra is None else [0.2, 0.9]  # highest score wins
        samples.append(dict(task="grounding", img_id=1, scale_factor=(scale, scale), expression="x",
                            gt_instances=dict(bboxes=torch.tensor(np.asarray([gt_ori * scale]), dtype=torch.float32)),
                            pred_instances=dict(bboxes=torch.tensor(np.asarray(boxes), dtype=torch.float32),
                                                scores=torch.tensor(scores))))
    samples.append(dict(task="detection"))  # other tasks are ignored
    metric = RefCocoMetric()
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    assert result["precision@0.5"] == pytest.approx(200 / 3)
    assert result["mean_iou"] == pytest.approx(100 * (0.75 + 0.375 + 0.75) / 3, rel=1e-4)


# ----------------------------------------------------------------------------- captions
def test_bleu_hand_computed():
    refs = {1: ["The cat sat on the mat."]}
    b = bleu(refs, {1: "the cat sat on the mat today"})  # p = 6/7, 5/6, 4/5, 3/4; no brevity penalty
    assert b[0] == pytest.approx(6 / 7)
    assert b[1] == pytest.approx(math.sqrt(6 / 7 * 5 / 6))
    assert b[3] == pytest.approx((3 / 7) ** 0.25)
    short = bleu(refs, {1: "the cat sat on"})            # all precisions 1, BP = exp(1 - 6/4)
    assert short[3] == pytest.approx(math.exp(-0.5))
    assert bleu(refs, {1: "a dog"})[3] < 1e-4  # no match: only the toolkit's tiny smoothing
    # closest reference length chooses the brevity penalty
    assert bleu({1: ["the cat sat on", "x y z w v u t s r q"]}, {1: "the cat sat on"})[3] == pytest.approx(1.0)


def test_cider_hand_computed():
    refs = {"A": ["a b"], "B": ["c d"]}
    score, per = cider_d(refs, {"A": "a b", "B": "c d"})
    # idf = log 2 for every n-gram; n = 1, 2 have cosine 1, n = 3, 4 are empty: (1 + 1) / 4 * 10
    assert per["A"] == pytest.approx(5.0) and score == pytest.approx(5.0)
    score, per = cider_d(refs, {"A": "a b x", "B": "c d"})
    expected_a = (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4 * 10
    assert per["A"] == pytest.approx(expected_a) and score == pytest.approx((expected_a + 5) / 2)
    # an n-gram in every image's references carries no weight
    _, per = cider_d({"A": ["x a"], "B": ["x b"]}, {"A": "x", "B": "x"})
    assert per["A"] == 0.0


def test_caption_metric_dumps_and_scores(tmp_path):
    metric = CaptionMetric(outfile_prefix=str(tmp_path / "cap"), scorer="own")
    metric.process({}, [dict(task="caption", img_id=1, pred_text="a b", gt_texts=["a b"]),
                        dict(task="caption", img_id=2, pred_text="c d", gt_texts=["c d"]),
                        dict(task="caption", img_id=2, pred_text="ignored duplicate", gt_texts=["c d"])])
    result = metric.compute_metrics(metric.results)
    assert result["CIDEr"] == pytest.approx(500.0) and result["BLEU-1"] == pytest.approx(100.0)
    assert json.load(open(tmp_path / "cap.caption.json")) == [dict(image_id=1, caption="a b"),
                                                               dict(image_id=2, caption="c d")]


# ----------------------------------------------------------------------------- VQA
def test_vqa_normalisation():
    assert normalize_answer("The Dog.") == "dog"
    assert normalize_answer("two dogs") == "2 dogs"
    assert normalize_answer("dont know") == "don't know"
    assert normalize_answer("black/white") == "black white"
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("yes!") == "yes"
    assert normalize_answer("an apple\n") == "apple"
    assert normalize_answer("2.") == "2" and normalize_answer("it's red") == "it's red"


def test_vqa_contraction_table_is_the_official_one():
    # Ordinary words are not in the official table, whatever contraction they spell without
    # the apostrophe; "hed" is.
    for word in ("shed", "well", "were", "its", "ill", "id", "wed", "hell", "shell", "cant've"):
        assert normalize_answer(word) == word
    assert normalize_answer("hed") == "he'd" and normalize_answer("shed've") == "she'd've"
    assert normalize_answer("dont") == "don't" and normalize_answer("wont") == "won't"
    # the table's quirks: capitalised keys never match the lower-cased words, one entry maps
    # the apostrophe form to the bare one, and "twas" gains a leading apostrophe
    assert normalize_answer("Im") == "im" and normalize_answer("ive") == "ive"
    assert normalize_answer("somebody'd") == "somebodyd" and normalize_answer("twas") == "'twas"


def test_vqa_accuracy_hand_computed():
    gts = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("two", gts) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("3", gts) == pytest.approx(1.0)
    assert vqa_accuracy("4", gts) == 0.0
    assert vqa_accuracy("Yes", ["yes"] + ["no"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    # leave-one-out: 3 of 10 agree → 7 subsets with 3 (1.0) and 3 with 2 (2/3)
    assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx((7 + 3 * 2 / 3) / 10)
    with pytest.raises(ValueError, match="rule"):
        vqa_accuracy("x", ["x"], rule="strict")


def test_vqa_official_and_lenient_rules_differ_where_the_script_does():
    """The official script always normalises the prediction, and the humans' answers only by
    punctuation and only when they disagree; the lenient rule normalises both always."""
    # The prediction is normalised: "Two" becomes "2" (both rules).
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0 and vqa_accuracy("Two", ["2"] * 10, rule="lenient") == 1.0
    # Unanimous humans are left as written: their "two" never equals a normalised prediction.
    assert vqa_accuracy("two", ["two"] * 10) == 0.0 and vqa_accuracy("2", ["two"] * 10) == 0.0
    assert vqa_accuracy("two", ["two"] * 10, rule="lenient") == 1.0
    assert vqa_accuracy("dog", ["the dog"] * 10) == 0.0 and vqa_accuracy("dog", ["the dog"] * 10, rule="lenient") == 1.0
    # Disagreeing humans get punctuation processing only: "the dog" keeps its article, so only
    # the two humans who said "dog" count.
    gts = ["the dog"] * 8 + ["dog"] * 2
    assert vqa_accuracy("dog", gts) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    assert vqa_accuracy("dog", gts, rule="lenient") == 1.0
    # "black/white" becomes "black white" on both sides, but only when the humans disagree.
    assert vqa_accuracy("black/white", ["black/white"] * 3 + ["cat"] * 7) == pytest.approx((7 + 3 * 2 / 3) / 10)
    assert vqa_accuracy("black/white", ["black/white"] * 10) == 0.0
    # A mark the script replaces by a space is not stripped from a human answer: "dog!" is
    # "dog " and never matches (the prediction's words are re-joined, so it is stripped).
    assert vqa_accuracy("dog", ["dog!"] * 3 + ["cat"] * 7) == 0.0
    assert vqa_accuracy("dog", ["dog!"] * 3 + ["cat"] * 7, rule="lenient") == pytest.approx((7 + 3 * 2 / 3) / 10)
    # Case: unnormalised human answers keep their capitals when they disagree.
    assert vqa_accuracy("yes", ["Yes"] * 9 + ["no"]) == 0.0
    assert vqa_accuracy("yes", ["Yes"] * 9 + ["no"], rule="lenient") == 1.0


def test_vqa_metric_and_dump(tmp_path):
    samples = [dict(task="vqa", question_id=1, pred_text="two", gt_texts=["2"] * 10),
               dict(task="vqa", question_id=2, pred_text="red", gt_texts=["blue"] * 10),
               dict(task="vqa", question_id=3, pred_text="the dog", gt_texts=["the dog"] * 10)]
    metric = VQAAccuracy(outfile_prefix=str(tmp_path / "v"))
    metric.process({}, samples)
    assert metric.compute_metrics(metric.results)["accuracy"] == pytest.approx(100 / 3)
    assert json.load(open(tmp_path / "v.vqa.json")) == [dict(question_id=1, answer="two"),
                                                         dict(question_id=2, answer="red"),
                                                         dict(question_id=3, answer="the dog")]
    lenient = VQAAccuracy(rule="lenient")
    lenient.process({}, samples)
    assert lenient.compute_metrics(lenient.results)["accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="rule"):
        VQAAccuracy(rule="strict")


def test_vqa_accuracy_grouped_by_turn():
    samples = [dict(task="vqa", question_id=i, turn=turn, pred_text=pred, gt_texts=[gt] * 10)
               for i, (turn, pred, gt) in enumerate([(1, "2", "2"), (1, "no", "yes"), (2, "red", "red"),
                                                     (2, "big", "big"), (2, "3", "1"), (3, "left", "left")])]
    metric = VQAAccuracy(group_by="turn")
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    assert result == pytest.approx(dict(accuracy=400 / 6, accuracy_turn1=50.0, accuracy_turn2=200 / 3,
                                        accuracy_turn3=100.0, accuracy_answer_yes=0.0))


def test_vqa_accuracy_splits_yes_and_no_references_and_answer_types():
    """A model answering "no" to everything scores 100 on the "no" questions and 0 on the "yes"
    ones; the reference is target_text when given, else the humans' most common answer."""
    rows = [("yes/no", "no", "yes", None), ("yes/no", "no", "yes", None), ("yes/no", "no", "no", None),
            ("yes/no", "yes", ["yes"] * 6 + ["no"] * 4, "no"), ("number", "2", "2", None), ("number", "no", "3", None)]
    samples = [dict(task="vqa", question_id=i, answer_type=kind, pred_text=pred,
                    gt_texts=gts if isinstance(gts, list) else [gts] * 10,
                    **({"target_text": target} if target else {}))
               for i, (kind, pred, gts, target) in enumerate(rows)]
    metric = VQAAccuracy()
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    # question 3: target "no", prediction "yes" matches 6 of 10 humans (accuracy 1.0)
    assert result == pytest.approx(dict(accuracy=300 / 6, accuracy_answer_yes=0.0, accuracy_answer_no=100.0,
                                        accuracy_type_yes_no=50.0, accuracy_type_number=50.0))


def test_multi_task_metric_routes_by_task():
    metric = MultiTaskMetric(task_metrics=dict(caption=dict(type="CaptionMetric", scorer="own"), vqa=dict(type="VQAAccuracy"),
                                          grounding=dict(type="RefCocoMetric")))
    metric.process({}, [dict(task="vqa", question_id=1, pred_text="yes", gt_texts=["yes"] * 10),
                        dict(task="caption", img_id=1, pred_text="a b", gt_texts=["a b"]),
                        dict(task="caption", img_id=2, pred_text="c d", gt_texts=["c e"])])
    result = metric.evaluate(3)
    assert result["vqa/accuracy"] == pytest.approx(100.0)
    assert "caption/CIDEr" in result and not any(k.startswith("grounding") for k in result)


def test_multi_task_metric_builds_without_warnings(monkeypatch):
    """Its keys carry the task prefixes; mmengine must not warn that it has no prefix of its own."""
    import mmengine.evaluator.metric as metric_module
    logged = []
    monkeypatch.setattr(metric_module, "print_log", lambda message, *args, **kwargs: logged.append(message))
    MultiTaskMetric(task_metrics=dict(vqa=dict(type="VQAAccuracy")))
    assert logged == []


def test_coco_metric_reads_predicted_masks(coco_gt):
    path, data = coco_gt
    gt = COCO(str(path))
    samples = _predictions(data, 0.0, np.random.default_rng())
    for sample in samples:
        anns = gt.imgToAnns[sample["img_id"]]
        sample["pred_instances"]["masks"] = torch.from_numpy(np.stack([gt.annToMask(a) for a in anns]).astype(bool))
    metric = VisionLLMCocoMetric(ann_file=str(path), metric="segm")
    metric.process({}, samples)
    assert metric.compute_metrics(metric.results)["segm_mAP"] == pytest.approx(1.0)


# Captions in the style of COCO: capitals, punctuation, contractions, possessives, hyphens,
# numbers, non-ASCII letters and brackets, where a simpler tokenizer would differ from PTB's.
_CAPTION_CORPUS = {
    1: (["A man's dog doesn't bark at the black-and-white cat.", "Two dogs (one brown) sit on a mat!",
         "The café's owner can't see the dog."], "A man's dog doesn't bark at the cat."),
    2: (["A red/blue circle & a star: yes", "Three shapes on a 3.5 m wide board, don't they?",
         "An over-exposed photo of 1,000 people."], "A red circle and a star, don't you think?"),
    3: (["Zoë's naïve über-cool straße sign", "They're looking at a sign; it's orange.",
         "We've seen two signs [maybe three]."], "They've seen a naïve sign."),
    4: (["A person cannot ride a bike in the U.S. rain", "Mr. Smith rides a bike at 10:30.",
         "A bike leaning against a wall -- red."], "A man rides a red bike at 10:30"),
    5: (["\"Stop\" says the sign... near the road", "It is a stop sign by the road.",
         "A sign that's red and white."], "A red and white stop sign by the road."),
}


def _corpus_refs_hyps():
    return {k: v[0] for k, v in _CAPTION_CORPUS.items()}, {k: v[1] for k, v in _CAPTION_CORPUS.items()}


def _random_corpus(rng, images=40):
    vocab = ["a", "red", "blue", "circle", "star", "two", "and", "on", "the", "left", "square", "of", "big"]
    refs = {i: [" ".join(rng.choice(vocab, int(rng.integers(3, 12)))) for _ in range(int(rng.integers(1, 6)))]
            for i in range(images)}
    hyps = {i: " ".join(rng.choice(vocab, int(rng.integers(1, 12)))) for i in range(images)}
    hyps[0] = refs[0][0]  # one exact match, so that 4-grams match somewhere
    return refs, hyps


def test_own_bleu_cider_equal_the_toolkit_scorers_on_the_same_tokens():
    """Our BLEU-1..4 and CIDEr-D against pycocoevalcap's on a multi-image corpus, both fed the
    tokens of our tokenizer (these scorers are pure Python: no Java needed)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from visionllm.evaluation.caption_scores import tokenize
    for refs, hyps in (_random_corpus(np.random.default_rng()), _corpus_refs_hyps()):
        gts = {k: [" ".join(tokenize(r)) for r in v] for k, v in refs.items()}
        res = {k: [" ".join(tokenize(h))] for k, h in hyps.items()}
        expected_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        expected_cider, expected_per_image = Cider().compute_score(gts, res)
        assert bleu(refs, hyps) == pytest.approx(expected_bleu, rel=1e-12, abs=1e-12)
        cider, per_image = cider_d(refs, hyps)
        assert cider == pytest.approx(expected_cider, rel=1e-12, abs=1e-12)
        assert [per_image[k] for k in hyps] == pytest.approx(list(expected_per_image), rel=1e-12, abs=1e-12)


def _java_children():
    """Java processes started by this process that are still alive."""
    import os
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and comm == "java":
            found.append(int(entry))
    return found


requires_java = pytest.mark.skipif(__import__("shutil").which("java") is None,
                                   reason="the COCO caption toolkit's tokenizer and METEOR need java")


@requires_java
def test_own_tokenizer_is_the_ptb_tokenizer_on_captions():
    from visionllm.evaluation.caption_scores import tokenize
    from visionllm.evaluation.caption_toolkit import ptb_tokenize
    refs, hyps = _corpus_refs_hyps()
    captions = {(k, i): [c] for k, v in refs.items() for i, c in enumerate(v)}
    captions.update({(k, "hyp"): [h] for k, h in hyps.items()})
    ptb = ptb_tokenize(captions)
    for key, (caption,) in captions.items():
        assert " ".join(tokenize(caption)) == ptb[key][0], caption
    assert _java_children() == []


@requires_java
def test_own_fallback_scores_equal_the_toolkit_on_raw_captions():
    """End to end on raw text: our tokenizer + scorer against PTB + pycocoevalcap's scorers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from visionllm.evaluation.caption_metric import own_scores
    from visionllm.evaluation.caption_toolkit import ptb_tokenize
    refs, hyps = _corpus_refs_hyps()
    gts = ptb_tokenize(refs)
    res = ptb_tokenize({k: [h] for k, h in hyps.items()})
    expected_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected_cider, _ = Cider().compute_score(gts, res)
    own = own_scores(refs, hyps)
    assert [own[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(expected_bleu, rel=1e-12, abs=1e-12)
    assert own["CIDEr"] == pytest.approx(expected_cider, rel=1e-12, abs=1e-12)


@requires_java
@pytest.mark.slow
def test_caption_metric_with_java_gives_exactly_the_toolkit_numbers():
    """The metric against pycocoevalcap run here directly (its tokenizer and the four scorers
    COCOEvalCap runs, SPICE aside); the Java processes are gone afterwards."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    refs, hyps = _corpus_refs_hyps()
    hyps[6], refs[6] = "", ["An image with no caption predicted."]  # an empty prediction
    metric = CaptionMetric()
    metric.process({}, [dict(task="caption", img_id=k, pred_text=hyps[k], gt_texts=refs[k]) for k in hyps])
    result = metric.compute_metrics(metric.results)
    # (the printed table's title is this same string; mmengine's logger keeps the stdout of the
    # test that created it, so capsys cannot see it reliably)
    assert "COCO caption toolkit" in metric.scorer_used
    assert _java_children() == []

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": h}] for k, h in hyps.items()})
    expected = dict(zip(["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"], Bleu(4).compute_score(gts, res, verbose=0)[0]))
    meteor = Meteor()
    expected["METEOR"] = meteor.compute_score(gts, res)[0]
    meteor.__del__()  # ends its java process (otherwise left to garbage collection)
    expected["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name] == value * 100, name
    assert 0 < result["METEOR"] < 100 and 0 < result["CIDEr"]


def test_caption_metric_without_java_falls_back_to_the_own_scorer(monkeypatch, tmp_path):
    from visionllm.evaluation.caption_metric import OWN_SCORER_NAME, own_scores
    refs, hyps = _corpus_refs_hyps()
    samples = [dict(task="caption", img_id=k, pred_text=hyps[k], gt_texts=refs[k]) for k in hyps]
    empty_dir = tmp_path / "bin"
    empty_dir.mkdir()
    monkeypatch.setenv("PATH", str(empty_dir))  # java is hidden
    metric = CaptionMetric()
    metric.process({}, samples)
    with pytest.warns(UserWarning, match="no java"):
        result = metric.compute_metrics(metric.results)
    assert metric.scorer_used == OWN_SCORER_NAME
    assert result == {name: value * 100 for name, value in own_scores(refs, hyps).items()}
    strict = CaptionMetric(scorer="coco")
    strict.process({}, samples)
    with pytest.raises(RuntimeError, match="no java"):
        strict.compute_metrics(strict.results)
    # a java that cannot run (it prints nothing): a clean fallback too, no half-read output
    fake = empty_dir / "java"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    metric = CaptionMetric()
    metric.process({}, samples)
    with pytest.warns(UserWarning, match="toolkit failed"):
        assert metric.compute_metrics(metric.results) == result
    assert metric.scorer_used == OWN_SCORER_NAME
    from visionllm.evaluation.caption_toolkit import ptb_tokenize
    with pytest.raises(RuntimeError, match="PTB tokenizer"):  # not a silently shorter result
        ptb_tokenize({1: ["a caption"], 2: ["another caption"]})
    with pytest.raises(ValueError, match="scorer"):
        CaptionMetric(scorer="java")


def test_segm_of_box_only_predictions_uses_the_box_rectangle():
    from visionllm.evaluation.coco_metric import VisionLLMCocoMetric
    import torch
    rles = VisionLLMCocoMetric._encode_masks(dict(bboxes=torch.tensor([[2.0, 3.0, 6.0, 9.0]])), 12, 10)
    from pycocotools import mask as mask_utils
    mask = mask_utils.decode(dict(rles[0], counts=rles[0]["counts"].encode()))
    ys, xs = mask.nonzero()
    assert mask.shape == (12, 10) and xs.min() == 2 and xs.max() == 5 and ys.min() == 3 and ys.max() == 8


def test_caption_metric_reports_hallucination_and_counts_in_its_table(tmp_path, monkeypatch):
    """With the instances file of the images: CHAIR, count accuracy and repeat share in the results
    and as columns of the printed table, whose title still names the scorer."""
    import visionllm.evaluation.caption_metric as caption_metric
    instances = dict(images=[dict(id=1), dict(id=2)], categories=[dict(id=1, name="square"), dict(id=2, name="star")],
                     annotations=[dict(image_id=1, category_id=1, attributes=dict(colour="red")),
                                  dict(image_id=2, category_id=2, attributes=dict(colour="blue")),
                                  dict(image_id=2, category_id=2, attributes=dict(colour="blue"))])
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(instances))
    tables = []
    monkeypatch.setattr(caption_metric, "print_table", lambda *args: tables.append(args))
    metric = CaptionMetric(scorer="own", ann_file=str(ann_file))
    # image 1: one mention, a red square (right); image 2: a blue star (right, count 2 right) and a
    # red star (absent colour), then the blue stars again (a repeat)
    metric.process({}, [dict(task="caption", img_id=1, pred_text="a red square", gt_texts=["a red square"]),
                        dict(task="caption", img_id=2, pred_text="two blue stars, a red star and two blue stars",
                             gt_texts=["two blue stars"])])
    result = metric.compute_metrics(metric.results)
    assert result["CHAIR_i"] == pytest.approx(100 / 4) and result["CHAIR_s"] == pytest.approx(50.0)
    assert result["CountAcc"] == pytest.approx(100.0) and result["Repeat_s"] == pytest.approx(50.0)
    (title, header, rows), = tables
    assert header[-4:] == ["CHAIR_i", "CHAIR_s", "CountAcc", "Repeat_s"] and "CIDEr" in header
    assert rows[0][-4:] == [result[name] for name in header[-4:]]
    assert metric.scorer_used in title and "4 object mentions" in title
    # without the instances file the table keeps its caption scores only
    plain = CaptionMetric(scorer="own")
    plain.process({}, [dict(task="caption", img_id=1, pred_text="a red square", gt_texts=["a red square"])])
    assert "CHAIR_i" not in plain.compute_metrics(plain.results)
