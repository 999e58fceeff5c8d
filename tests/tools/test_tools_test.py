"""tools/test.py end to end on generated shapes data with an oracle model (predictions = the
ground truth mapped back to original pixels), so every task's path from config to table and
result json runs; the real model plugs into the same path."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionllm.registry import MODELS
from repo_paths import REPO

pytestmark = pytest.mark.slow  # the runner's whole test loop


@MODELS.register_module(force=True)
class _OracleVisionLLM(BaseModel):
    def __init__(self, jitter: float = 0.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.jitter = jitter

    def forward(self, inputs, data_samples=None, mode="predict"):
        from mmengine.structures import InstanceData
        for sample in data_samples:
            gt = sample.gt_instances
            sx, sy = sample.scale_factor
            scale = torch.tensor([sx, sy, sx, sy])
            pred = InstanceData()
            pred.bboxes = gt.bboxes / scale + self.jitter * torch.randn_like(gt.bboxes)
            pred.scores = torch.rand(len(gt)) * 0.5 + 0.5
            ids = torch.tensor(sample.category_ids, dtype=torch.long)
            pred.labels = ids[gt.labels] if sample.task in ("detection", "segmentation") else gt.labels
            if "polygons" in gt:
                pred.polygons = gt.polygons / torch.tensor([sx, sy])
            sample.pred_instances = pred
            if sample.task in ("caption", "vqa", "region_caption", "region_vqa", "region_classification"):
                sample.pred_text = sample.gt_texts[0]
        return data_samples


@pytest.fixture
def shapes_workspace(tmp_path, monkeypatch):
    from visionllm.datasets.shapes import build_split
    build_split("val", 4, int(np.random.randint(1000)), str(tmp_path / "data" / "shapes"))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "oracle_shapes.py"
    config.write_text(
        f"_base_ = ['{REPO}/configs/_base_/default_runtime.py', '{REPO}/configs/_base_/datasets/shapes_all_tasks.py']\n"
        "custom_imports = dict(imports=['visionllm.datasets', 'visionllm.evaluation'], allow_failed_imports=False)\n"
        "custom_hooks = []\n"
        "model = dict(type='_OracleVisionLLM', jitter=1.5)\n"
        "env_cfg = dict(dist_cfg=dict(backend='gloo'))\n")
    checkpoint = tmp_path / "oracle.pth"
    torch.save(dict(state_dict=dict(weight=torch.zeros(1))), checkpoint)
    return tmp_path, config, checkpoint


def test_tools_test_prints_tables_and_writes_standard_results(shapes_workspace):
    from tools.test import main
    root, config, checkpoint = shapes_workspace
    out, show = root / "results", root / "show"
    metrics = main([str(config), str(checkpoint), "--work-dir", str(root / "work"), "--out", str(out),
                    "--show-dir", str(show)])
    gt = COCO(str(root / "data/shapes/annotations/instances_val.json"))
    for task, iou_types in (("detection", ["bbox"]), ("segmentation", ["bbox", "segm"])):
        for iou_type in iou_types:
            records = json.load(open(out / f"{task}.{iou_type}.json"))
            with contextlib.redirect_stdout(io.StringIO()):
                ev = COCOeval(gt, gt.loadRes(records), iou_type)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            assert metrics[f"{task}/{iou_type}_mAP"] == pytest.approx(ev.stats[0])
            assert ev.stats[1] > 0.9  # jittered ground truth still matches at IoU 0.5
    assert metrics["grounding/precision@0.5"] > 90
    assert metrics["vqa/accuracy"] == pytest.approx(100.0)
    assert metrics["caption/CIDEr"] > 100
    # the region tasks' tables come after the five (answers and descriptions of the oracle are right)
    assert metrics["region_vqa/accuracy"] == metrics["region_classification/accuracy"] == pytest.approx(100.0)
    assert metrics["region_caption/ShapeColour"] == pytest.approx(100.0) and metrics["region_caption/CIDEr"] > 100
    refexp = json.load(open(out / "grounding.refexp.json"))
    assert refexp and all(len(r["bbox"]) == 4 for r in refexp)
    assert {r["image_id"] for r in json.load(open(out / "caption.caption.json"))} == set(gt.getImgIds())
    assert all(set(r) == {"question_id", "answer"} for r in json.load(open(out / "vqa.vqa.json")))
    pictures = os.listdir(show)
    assert any(p.startswith("segmentation_") for p in pictures) and any(p.startswith("vqa_") for p in pictures)


def test_tools_test_refuses_a_missing_or_foreign_checkpoint(shapes_workspace):
    from tools.test import main
    root, config, _ = shapes_workspace
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main([str(config), str(root / "nowhere.pth"), "--work-dir", str(root / "work")])
    foreign = root / "foreign.pth"
    torch.save(dict(state_dict=dict(other=torch.zeros(1))), foreign)
    with pytest.raises(SystemExit, match="does not fit the model"):
        main([str(config), str(foreign), "--work-dir", str(root / "work")])
