"""The tiny VisionLLM learns region samples of the three region tasks exactly, where each pair of
samples shares image and instruction and differs only by its region: a model that dropped the
region could not give the two different answers."""
import os

import pytest
import torch
from mmengine.dataset import pseudo_collate

pytestmark = [pytest.mark.slow]

PIPELINE = [dict(type="LoadImageRGB"), dict(type="LoadVisionLLMAnnotations"),
            dict(type="ResizeKeepRatio", scale=(96, 64)), dict(type="BuildInstruction", template_index=0, seed=0),
            dict(type="PackVisionLLMInputs")]


def _infos(task):
    from visionllm.datasets import ShapesRegionDataset
    data = ShapesRegionDataset(task=task, data_root="data/shapes/", ann_file="annotations/instances_train.json",
                               refs_file="annotations/refs_train.json", data_prefix=dict(img_path="images/train/"),
                               pipeline=PIPELINE)
    return data, [data.get_data_info(i) for i in range(len(data))]


def region_pair(task):
    """Two samples of ``task`` on one image with the same instruction and different answers."""
    data, infos = _infos(task)
    for i, a in enumerate(infos):
        for b in infos[i + 1:]:
            if a["img_id"] != b["img_id"]:
                continue
            if task == "region_classification":  # one candidate list for both
                names = sorted({*a["region_categories"], *b["region_categories"]})
                a, b = dict(a, region_categories=names), dict(b, region_categories=names)
            same_question = a.get("question") == b.get("question")
            if same_question and a["gt_texts"][0] != b["gt_texts"][0]:
                return [data.pipeline(dict(a)), data.pipeline(dict(b))]
    raise AssertionError(f"no pair of {task} samples on one image with different answers")


def test_region_tasks_are_learnt_from_the_region(tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):
    from tiny_model import build_tiny_model
    _, model, _, _ = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                      decoder_options=dict(max_new_tokens=12))
    samples = [s for task in ("region_caption", "region_vqa", "region_classification") for s in region_pair(task)]
    for a, b in zip(samples[0::2], samples[1::2]):
        ma, mb = a["data_samples"].metainfo, b["data_samples"].metainfo
        assert ma["instruction"] == mb["instruction"] and torch.equal(a["inputs"], b["inputs"])
        assert ma["target_text"] != mb["target_text"] and ma["regions"].tolist() != mb["regions"].tolist()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    steps = int(os.environ.get("VISIONLLM_REGION_OVERFIT_STEPS", 80))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(steps):
        data = model.data_preprocessor(pseudo_collate(samples), True)
        losses = model(**data, mode="loss")
        optimizer.zero_grad()
        sum(v for k, v in losses.items() if "loss" in k).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        predicted = model(**model.data_preprocessor(pseudo_collate(samples), False), mode="predict")
    got = [(p.task, p.pred_text) for p in predicted]
    wanted = [(s["data_samples"].task, s["data_samples"].target_text) for s in samples]
    assert got == wanted, f"loss_text {losses['loss_text'].item():.4f}"
