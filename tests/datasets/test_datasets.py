"""Readers on small files in each real format, written by the tests."""
import json
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from visionllm.registry import DATASETS

import visionllm.datasets  # noqa: F401  (registers)
from repo_paths import REPO


def _image(path, w=40, h=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.randint(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _square(x, y, s):
    return [x, y, x + s, y, x + s, y + s, x, y + s]


@pytest.fixture
def coco_files(tmp_path):
    rng = np.random.default_rng()
    images, anns = [], []
    for i in range(1, 4):
        images.append(dict(id=i, file_name=f"img{i}.png", width=40, height=30))
        _image(tmp_path / "imgs" / f"img{i}.png")
        x, y = [float(v) for v in rng.integers(0, 10, 2)]
        anns.append(dict(id=10 * i, image_id=i, category_id=7, bbox=[x, y, 8.0, 8.0], area=64.0, iscrowd=0,
                         segmentation=[_square(x, y, 8.0)]))
        anns.append(dict(id=10 * i + 1, image_id=i, category_id=3, bbox=[x + 10, y, 5.0, 6.0], area=30.0, iscrowd=0,
                         segmentation=[_square(x + 10, y, 5.0)]))
    # one crowd region (kept, ignored), then one of each kind of bad annotation
    anns.append(dict(id=100, image_id=1, category_id=3, bbox=[0, 0, 20, 20], area=400, iscrowd=1,
                     segmentation=dict(counts=[0, 400], size=[30, 40])))
    anns.append(dict(id=101, image_id=1, category_id=3, bbox=[5, 5, 0, 4], area=0, iscrowd=0,
                     segmentation=[_square(5, 5, 4)]))                                   # zero-area box
    anns.append(dict(id=102, image_id=2, category_id=3, bbox=[5, 5, 4, 4], area=16, iscrowd=0,
                     segmentation=[]))                                                   # empty polygon
    anns.append(dict(id=103, image_id=2, category_id=3, bbox=[5, 5, 4, 4], area=16, iscrowd=0,
                     segmentation=[[5, 5, 9, 9, 9, 5, 5, 9]]))                            # bow-tie
    anns.append(dict(id=104, image_id=3, category_id=99, bbox=[5, 5, 4, 4], area=16, iscrowd=0,
                     segmentation=[_square(5, 5, 4)]))                                   # unknown category
    images.append(dict(id=4, file_name="missing.png", width=40, height=30))              # missing image
    anns.append(dict(id=105, image_id=4, category_id=3, bbox=[1, 1, 4, 4], area=16, iscrowd=0,
                     segmentation=[_square(1, 1, 4)]))
    coco = dict(images=images, annotations=anns,
                categories=[dict(id=7, name="dog"), dict(id=3, name="cat")])
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    return tmp_path, coco


def _build(cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = DATASETS.build(cfg)
    return dataset, [w for w in caught if "skipped" in str(w.message)]


def test_coco_instances_reader_skips_bad_annotations_in_one_warning(coco_files):
    root, coco = coco_files
    dataset, caught = _build(dict(type="CocoInstancesDataset", ann_file=str(root / "instances.json"),
                                  data_prefix=dict(img_path=str(root / "imgs")), task="segmentation"))
    assert len(caught) == 1
    message = str(caught[0].message)
    for reason in ("zero-area box", "empty polygon", "self-intersecting polygon", "unknown category id",
                   "missing image file"):
        assert reason in message
    assert "skipped 5 bad annotations" in message and "instances.json" in message
    assert dataset.metainfo["classes"] == ("cat", "dog")  # sorted by category id
    assert len(dataset) == 3
    info = dataset.get_data_info(0)
    assert info["task"] == "segmentation" and info["img_path"].endswith("img1.png")
    labels = {i["ann_id"]: i["bbox_label"] for i in info["instances"]}
    assert labels[10] == 1 and labels[11] == 0
    crowd = [i for i in info["instances"] if i["ann_id"] == 100]
    assert crowd and crowd[0]["ignore_flag"] == 1
    src = {a["id"]: a for a in coco["annotations"]}
    x, y, w, h = src[10]["bbox"]
    assert labels and [i for i in info["instances"] if i["ann_id"] == 10][0]["bbox"] == [x, y, x + w, y + h]


def test_detection_task_keeps_boxes_without_polygon_checks(coco_files):
    root, _ = coco_files
    dataset, caught = _build(dict(type="CocoInstancesDataset", ann_file=str(root / "instances.json"),
                                  data_prefix=dict(img_path=str(root / "imgs")), task="detection"))
    assert len(caught) == 1 and "polygon" not in str(caught[0].message)
    assert sum(len(dataset.get_data_info(i)["instances"]) for i in range(len(dataset))) == 6 + 1 + 2


@pytest.mark.parametrize("cfg", [
    dict(type="CocoInstancesDataset"),
    dict(type="RefCocoDataset", refs_file="REFS"),
    dict(type="CocoCaptionDataset"),
    dict(type="VQAv2Dataset"),
    dict(type="LlavaInstructDataset"),
])
def test_missing_annotation_file_is_a_one_line_error(tmp_path, cfg):
    path = str(tmp_path / "nowhere" / "ann.json")
    cfg = dict(cfg, ann_file=path)
    if cfg.get("refs_file") == "REFS":
        cfg["ann_file"] = str(tmp_path / "exists.json")
        (tmp_path / "exists.json").write_text(json.dumps(dict(images=[], annotations=[], categories=[])))
        cfg["refs_file"] = path
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.build(cfg)
    assert path in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("refs_format", ["pickle", "json"])
def test_refcoco_reader(coco_files, refs_format):
    root, _ = coco_files
    refs = [dict(ref_id=1, image_id=1, ann_id=10, split="val", category_id=7,
                 sentences=[dict(raw="The dog on the left", sent="the dog on the left", tokens=[]),
                            dict(raw="small dog", sent="small dog")]),
            dict(ref_id=2, image_id=2, ann_id=21, split="testA", sentences=[dict(sent="cat")]),
            dict(ref_id=3, image_id=3, ann_id=999, split="val", sentences=[dict(sent="ghost")]),  # no such ann
            dict(ref_id=4, image_id=4, ann_id=105, split="val", sentences=[dict(sent="lost")])]   # missing image
    path = root / ("refs.p" if refs_format == "pickle" else "refs.json")
    if refs_format == "pickle":
        path.write_bytes(pickle.dumps(refs))
    else:
        path.write_text(json.dumps(refs))
    dataset, caught = _build(dict(type="RefCocoDataset", ann_file=str(root / "instances.json"), refs_file=str(path),
                                  data_prefix=dict(img_path=str(root / "imgs")), split="val"))
    assert len(dataset) == 2 and len(caught) == 1
    first = dataset.get_data_info(0)
    assert first["task"] == "grounding" and first["expression"] == "the dog on the left"
    assert first["instances"][0]["bbox_label"] == 0 and first["ann_id"] == 10
    everything, _ = _build(dict(type="RefCocoDataset", ann_file=str(root / "instances.json"), refs_file=str(path),
                                data_prefix=dict(img_path=str(root / "imgs"))))
    assert len(everything) == 3


def test_caption_reader_karpathy_and_coco(tmp_path):
    _image(tmp_path / "val2014" / "a.jpg")
    _image(tmp_path / "train2014" / "b.jpg")
    karpathy = dict(images=[
        dict(filename="a.jpg", filepath="val2014", split="test", cocoid=5,
             sentences=[dict(raw="A dog runs.", tokens=["a", "dog", "runs"]), dict(raw="a running dog")]),
        dict(filename="b.jpg", filepath="train2014", split="restval", cocoid=6, sentences=[dict(raw="a cat")]),
        dict(filename="gone.jpg", filepath="val2014", split="test", cocoid=7, sentences=[dict(raw="nothing")])])
    (tmp_path / "karpathy.json").write_text(json.dumps(karpathy))
    test, caught = _build(dict(type="CocoCaptionDataset", ann_file=str(tmp_path / "karpathy.json"),
                               data_prefix=dict(img_path=str(tmp_path)), split="test"))
    assert len(test) == 1 and len(caught) == 1
    assert test.get_data_info(0)["gt_texts"] == ["A dog runs.", "a running dog"]
    assert test.get_data_info(0)["img_id"] == 5
    train, _ = _build(dict(type="CocoCaptionDataset", ann_file=str(tmp_path / "karpathy.json"),
                           data_prefix=dict(img_path=str(tmp_path)), split="train"))
    assert len(train) == 1 and train.get_data_info(0)["img_id"] == 6  # restval joins train
    coco = dict(images=[dict(id=5, file_name="a.jpg", width=40, height=30)],
                annotations=[dict(id=1, image_id=5, caption="one"), dict(id=2, image_id=5, caption="two")])
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    plain, _ = _build(dict(type="CocoCaptionDataset", ann_file=str(tmp_path / "captions.json"),
                           data_prefix=dict(img_path=str(tmp_path / "val2014"))))
    assert plain.get_data_info(0)["gt_texts"] == ["one", "two"] and plain.get_data_info(0)["task"] == "caption"


def test_vqa_reader(tmp_path):
    _image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    qs = dict(data_subtype="val2014", questions=[dict(image_id=42, question="What color?", question_id=420),
                                                 dict(image_id=43, question="Missing?", question_id=430)])
    answers = ["red"] * 6 + ["dark red"] * 4
    anns = dict(annotations=[dict(question_id=420, image_id=42, multiple_choice_answer="red", answer_type="other",
                                  answers=[dict(answer=a, answer_id=i) for i, a in enumerate(answers)]),
                             dict(question_id=430, image_id=43, multiple_choice_answer="no", answers=[])])
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(anns))
    dataset, caught = _build(dict(type="VQAv2Dataset", ann_file=str(tmp_path / "q.json"),
                                  answers_file=str(tmp_path / "a.json"),
                                  data_prefix=dict(img_path=str(tmp_path / "val2014"))))
    assert len(dataset) == 1 and len(caught) == 1
    info = dataset.get_data_info(0)
    assert info["question"] == "What color?" and info["gt_texts"] == answers and info["target_text"] == "red"
    assert info["question_id"] == 420 and info["task"] == "vqa"
    assert info["answer_type"] == "other"  # VQAAccuracy's per-type rows
    from visionllm.datasets.transforms.formatting import PackVisionLLMInputs
    packed = PackVisionLLMInputs()(dict(info, img=np.zeros((4, 4, 3), np.uint8)))["data_samples"]
    assert packed.answer_type == "other"


def test_vqa_reader_keeps_the_asked_answer_types(tmp_path):
    _image(tmp_path / "imgs" / "COCO_val2014_000000000042.jpg")
    kinds = ["other", "yes/no", "number", "other", "yes/no"]
    qs = dict(data_subtype="val2014", questions=[dict(image_id=42, question=f"q{i}?", question_id=i)
                                                 for i in range(len(kinds))])
    anns = dict(annotations=[dict(question_id=i, image_id=42, multiple_choice_answer="x", answer_type=kind,
                                  answers=[dict(answer="x", answer_id=0)]) for i, kind in enumerate(kinds)])
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(anns))
    base = dict(type="VQAv2Dataset", ann_file=str(tmp_path / "q.json"), answers_file=str(tmp_path / "a.json"),
                data_prefix=dict(img_path=str(tmp_path / "imgs")))
    for wanted in (["other"], ["yes/no", "number"]):
        dataset, _ = _build(dict(base, answer_types=wanted))
        ids = [dataset.get_data_info(i)["question_id"] for i in range(len(dataset))]
        assert ids == [i for i, kind in enumerate(kinds) if kind in wanted]
    everything, _ = _build(base)
    assert len(everything) == len(kinds)
    with pytest.raises(ValueError, match="non-empty list"):
        _build(dict(base, answer_types="other"))
    with pytest.raises(ValueError, match="answers_file"):
        _build(dict(base, answers_file="", answer_types=["other"]))


def test_llava_reader(tmp_path):
    _image(tmp_path / "imgs" / "000001.jpg")
    records = [dict(id="1", image="000001.jpg", conversations=[
        dict(**{"from": "human"}, value="<image>\nWhat is shown?"), dict(**{"from": "gpt"}, value="A dog."),
        dict(**{"from": "human"}, value="Is it big?"), dict(**{"from": "gpt"}, value="Yes.")]),
        dict(id="2", image="nope.jpg", conversations=[])]
    (tmp_path / "llava.json").write_text(json.dumps(records))
    dataset, caught = _build(dict(type="LlavaInstructDataset", ann_file=str(tmp_path / "llava.json"),
                                  data_prefix=dict(img_path=str(tmp_path / "imgs"))))
    assert len(dataset) == 2 and len(caught) == 1
    assert dataset.get_data_info(0)["question"] == "What is shown?"
    assert dataset.get_data_info(1)["target_text"] == "Yes."
    first, _ = _build(dict(type="LlavaInstructDataset", ann_file=str(tmp_path / "llava.json"),
                           data_prefix=dict(img_path=str(tmp_path / "imgs")), first_turn_only=True))
    assert len(first) == 1


class _Numbers:
    def __init__(self, tag, n):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.tag, i)


def test_multi_task_mixer_ratios_and_determinism():
    from visionllm.datasets import MultiTaskDataset
    seed = int(np.random.randint(10000))
    mix = MultiTaskDataset([_Numbers("a", 7), _Numbers("b", 50)], ratios=[3, 1], length=4000, seed=seed)
    draws = [mix[i] for i in range(len(mix))]
    assert len(draws) == 4000
    share_a = sum(tag == "a" for tag, _ in draws) / len(draws)
    assert abs(share_a - 0.75) < 0.04
    assert all(0 <= i < (7 if tag == "a" else 50) for tag, i in draws)
    again = MultiTaskDataset([_Numbers("a", 7), _Numbers("b", 50)], ratios=[3, 1], length=4000, seed=seed)
    assert [again[i] for i in range(0, 4000, 7)] == draws[::7]
    again.set_epoch(1)
    assert [again[i] for i in range(200)] != draws[:200]
    concat = MultiTaskDataset([_Numbers("a", 2), _Numbers("b", 3)])
    assert [concat[i] for i in range(len(concat))] == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]


def test_multi_task_pipeline_replaces_datasets_pipelines_and_says_so(tmp_path, monkeypatch):
    from mmengine.registry import init_default_scope
    from visionllm.datasets import multi_task
    from visionllm.datasets.shapes import build_split
    init_default_scope("visionllm")
    build_split("val", 2, int(np.random.randint(1000)), str(tmp_path))
    logged = []
    monkeypatch.setattr(multi_task, "print_log", lambda msg, **kw: logged.append(msg))
    mixture_pipeline = [dict(type="LoadImageRGB"), dict(type="PackVisionLLMInputs")]
    own_pipeline = [dict(type="LoadImageRGB"), dict(type="RandomFlipWithText", prob=1.0),
                    dict(type="PackVisionLLMInputs")]
    common = dict(type="CocoCaptionDataset", ann_file=str(tmp_path / "annotations" / "captions_val.json"),
                  data_prefix=dict(img_path=str(tmp_path / "images" / "val")))
    mix = multi_task.MultiTaskDataset([dict(common), dict(common, pipeline=own_pipeline),
                                       dict(common, pipeline=mixture_pipeline)], pipeline=mixture_pipeline)
    assert mix.replaced_pipelines == [1]  # only the dataset whose own, different pipeline was set aside
    assert len(logged) == 1 and "[1]" in logged[0]
    for dataset in mix.datasets:
        assert [type(t).__name__ for t in dataset.pipeline.transforms] == ["LoadImageRGB",
                                                                          "PackVisionLLMInputs"]
    logged.clear()
    multi_task.MultiTaskDataset([dict(common, pipeline=own_pipeline)])
    assert logged == []  # without a mixture pipeline each dataset keeps its own


def test_readers_on_generated_shapes(tmp_path):
    from visionllm.datasets.shapes import build_split
    build_split("val", 4, int(np.random.randint(1000)), str(tmp_path))
    ann = tmp_path / "annotations"
    prefix = dict(img_path=str(tmp_path / "images" / "val"))
    cfgs = [dict(type="CocoInstancesDataset", ann_file=str(ann / "instances_val.json"), task="segmentation"),
            dict(type="RefCocoDataset", ann_file=str(ann / "instances_val.json"), refs_file=str(ann / "refs_val.json"),
                 split="val"),
            dict(type="CocoCaptionDataset", ann_file=str(ann / "captions_val.json")),
            dict(type="VQAv2Dataset", ann_file=str(ann / "vqa_questions_val.json"),
                 answers_file=str(ann / "vqa_annotations_val.json"), image_info_file=str(ann / "instances_val.json"))]
    for cfg in cfgs:
        dataset, caught = _build(dict(cfg, data_prefix=prefix))
        assert len(dataset) >= 4 and not caught, cfg["type"]


def test_shapes_config_train_mixture_builds_every_task(tmp_path, monkeypatch):
    import os
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from visionllm.datasets.shapes import build_split
    repo = REPO
    cfg = Config.fromfile(os.path.join(repo, "configs/_base_/datasets/shapes_all_tasks.py"))
    build_split("train", 4, int(np.random.randint(1000)), str(tmp_path / "data" / "shapes"))
    monkeypatch.chdir(tmp_path)
    init_default_scope("visionllm")
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, length=60))
    tasks = set()
    for i in range(len(dataset)):
        sample = dataset[i]["data_samples"]
        tasks.add(sample.task)
        assert sample.instruction.count("<image>") == 1
    five = {"detection", "segmentation", "grounding", "caption", "vqa"}
    assert tasks == five | {"region_caption", "region_vqa", "region_classification"}


@pytest.mark.parametrize("kind", ["caption", "vqa"])
def test_text_task_readers_take_image_boxes_from_an_instances_file(coco_files, kind):
    """``boxes_file`` gives caption / VQA samples their image's boxes (xyxy, label -1 = no named
    category); crowd regions stay ignored and unusable boxes are left out."""
    root, coco = coco_files
    if kind == "caption":
        captions = dict(images=coco["images"][:3],
                        annotations=[dict(id=i, image_id=i, caption=f"picture {i}") for i in range(1, 4)])
        (root / "captions.json").write_text(json.dumps(captions))
        cfg = dict(type="CocoCaptionDataset", ann_file="captions.json")
    else:
        questions = dict(questions=[dict(image_id=i, question="how many?", question_id=i) for i in range(1, 4)])
        (root / "q.json").write_text(json.dumps(questions))
        cfg = dict(type="VQAv2Dataset", ann_file="q.json", image_info_file="instances.json")
    common = dict(cfg, data_root=str(root), data_prefix=dict(img_path=str(root / "imgs")))
    # the boxes may come from several files (COCO train2017 + val2017 cover the Karpathy split)
    split = dict(coco, annotations=[a for a in coco["annotations"] if a["image_id"] != 2])
    rest = dict(coco, annotations=[a for a in coco["annotations"] if a["image_id"] == 2])
    (root / "part1.json").write_text(json.dumps(split))
    (root / "part2.json").write_text(json.dumps(rest))
    with_boxes, _ = _build(dict(common, boxes_file=["part1.json", "part2.json"]))
    without, _ = _build(common)
    assert "instances" not in without.get_data_info(0)
    for idx in range(len(with_boxes)):
        info = with_boxes.get_data_info(idx)
        expected = []
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            if ann["image_id"] == info["img_id"] and w > 0 and h > 0:
                expected.append(([x, y, x + w, y + h], ann["iscrowd"]))
        got = [(i["bbox"], i["ignore_flag"]) for i in info["instances"]]
        assert sorted(got) == sorted(expected) and len(got) >= 2
        assert {i["bbox_label"] for i in info["instances"]} == {-1}


def test_coco_instances_reader_names_categories_by_an_attribute(coco_files):
    import random
    from visionllm.tasks.detection import DetectionTask
    root, coco = coco_files
    colours = ["red", "blue", "green"]
    rng = np.random.default_rng()
    for ann in coco["annotations"]:
        if ann["id"] != 11:  # one object without the attribute
            ann["attributes"] = dict(colour=str(rng.choice(colours)), size="small")
    (root / "instances.json").write_text(json.dumps(coco))
    dataset, caught = _build(dict(type="CocoInstancesDataset", ann_file=str(root / "instances.json"),
                                  data_prefix=dict(img_path=str(root / "imgs")), task="detection",
                                  name_attribute="colour"))
    assert len(caught) == 1 and "no 'colour' attribute: 1" in str(caught[0].message)
    kind = {7: "dog", 3: "cat"}

    def qualified(ann):
        return f'{ann["attributes"]["colour"]} {kind[ann["category_id"]]}'

    expected = {qualified(a) for a in coco["annotations"] if "attributes" in a and a["category_id"] in kind}
    classes = dataset.metainfo["classes"]
    assert list(classes) == sorted(expected)
    src = {a["id"]: a for a in coco["annotations"]}
    seen = 0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        for instance in info["instances"]:
            assert classes[instance["bbox_label"]] == qualified(src[instance["ann_id"]])
            seen += 1
    assert seen == 6 + 1 + 2 - 1
    # a detection instruction names the qualified categories, and its targets index into them
    info = dataset.get_data_info(0)
    labels = np.asarray([i["bbox_label"] for i in info["instances"] if not i["ignore_flag"]], dtype=np.int64)
    results = dict(classes=info["classes"], gt_labels=labels,
                   gt_bboxes=np.zeros((len(labels), 4), np.float32))
    names_before = [classes[i] for i in labels]
    instruction, _ = DetectionTask().build(results, random.Random(0), max_categories=6)
    categories = instruction.categories
    assert [categories[i] for i in results["gt_labels"]] == names_before
    assert all(name in instruction.text for name in categories)
