"""The paper data path end to end: the official file formats of COCO 2017, RefCOCO (unc), the
Karpathy caption split, VQAv2 and LLaVA-Instruct, laid out as
configs/_base_/datasets/coco_refcoco_caption_llava.py expects (tests/paper_data_tree.py writes a
miniature copy), read by the paper config's own pipelines and run through the paper model
(configs/visionllm_r50_alpaca7b_stage2.py) with only sizes made small: a random 2-layer LLaMA and
a 1-layer BERT saved as Hugging Face directories at the config's own paths
(checkpoints/alpaca-7b, checkpoints/bert-base-uncased: the same loading code as the real ones),
ResNet-18 without weights and narrow tokenizer layers, but M=100 image tokens, 80 categories and
the 1333x800 resize. Two training iterations, tools/test.py with all five metric tables, and
inference through the API with the checkpoint the training wrote.
"""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from paper_data_tree import IMAGES, KARPATHY, SPLITS_2017, expected_counts, write_paper_data_tree
from tiny_llm import save_tiny_llama
from repo_paths import REPO

STAGE2 = osp.join(REPO, "configs", "visionllm_r50_alpaca7b_stage2.py")
IMG_SCALE = (1333, 800)


def save_tiny_bert(directory: str) -> str:
    """A 1-layer random BERT with the uncased WordPiece vocabulary (the embedded MiniLM's, the
    same as bert-base-uncased), saved as a Hugging Face directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from visionllm.utils.embedded import minilm_dir
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# Sizes only: the rest (data, pipelines, M=100, 80 categories, 1333x800, LoRA, vocabulary,
# prompt style, pretrained paths) is the paper config's. runner_type: one CPU process instead of
# the multi-GPU strategy; workers 0 and logging every iteration for a two-iteration run.
SMALL_SIZES = """
_base_ = ["{stage2}"]
# frozen_dtype None: CPUs without bfloat16 matrix units run bfloat16 convolutions far slower than
# float32 at 1333x800 (110 s vs 4-6 s per image); the bfloat16 frozen base is covered by tests/engine/test_mixed_precision.py.
model = dict(frozen_dtype=None, image_tokenizer=dict(
    embed_dims=32,
    backbone=dict(depth=18, checkpoint=None),
    fusion=dict(num_heads=2),
    transformer=dict(num_heads=2, num_points=2, ffn_dims=64, num_encoder_layers=1, num_decoder_layers=1)))
load_from = None
runner_type = "Runner"
train_cfg = dict(max_iters=2, val_interval=3)
train_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = dict(num_workers=0, persistent_workers=False)
default_hooks = dict(logger=dict(interval=1))
"""


def write_small_config(directory: str) -> str:
    path = osp.join(directory, "paper_small.py")
    with open(path, "w") as handle:
        handle.write(SMALL_SIZES.format(stage2=STAGE2))
    return path


@pytest.fixture(scope="module")
def paper_tree(tmp_path_factory):
    """A workspace holding ``data/`` in the paper layout (the configs' paths are relative)."""
    root = str(tmp_path_factory.mktemp("paper_workspace"))
    write_paper_data_tree(root)
    return root


def _leaf_datasets(loader_cfg):
    from visionllm.datasets.checking import leaf_datasets
    return list(leaf_datasets(loader_cfg.dataset.to_dict()))


def _build(dataset_cfg):
    import visionllm.datasets  # noqa: F401
    from visionllm.registry import DATASETS
    with DefaultScope.overwrite_default_scope("visionllm"):
        return DATASETS.build(dataset_cfg)


def test_every_sample_of_the_tree_passes_the_paper_pipelines(paper_tree, monkeypatch):
    """Every reader of the paper data config reads its official-format file, and every sample
    goes through the config's own train and test pipelines into what the model expects."""
    monkeypatch.chdir(paper_tree)
    cfg = Config.fromfile(STAGE2)
    counts = expected_counts()
    np.random.seed(0)
    seen_tasks = set()
    train = _leaf_datasets(cfg.train_dataloader)
    assert [d.get("task") or d["type"] for d in train] == [
        "detection", "segmentation", "RefCocoDataset", "CocoCaptionDataset", "VQAv2Dataset", "LlavaInstructDataset"]
    expected_train = [counts["coco_train_images"]] * 2 + [counts["refcoco_train"], counts["caption_train"],
                                                          counts["vqa_train"], counts["llava"]]
    for leaf, expected in zip(train, expected_train):
        dataset = _build(leaf)
        assert len(dataset) == expected, leaf["type"]
        assert getattr(dataset, "num_bad_annotations", 0) == 0
        for i in range(len(dataset)):
            _check_packed(dataset[i], train=True)
            seen_tasks.add(dataset[i]["data_samples"].task)
    assert seen_tasks == {"detection", "segmentation", "grounding", "caption", "vqa"}

    test = _leaf_datasets(cfg.test_dataloader)
    expected_test = [counts["coco_val_images"]] * 2 + [counts["refcoco_val"], counts["caption_test"], counts["vqa_val"]]
    for leaf, expected in zip(test, expected_test):
        dataset = _build(leaf)
        assert len(dataset) == expected, leaf["type"]
        for i in range(len(dataset)):
            _check_packed(dataset[i], train=False)


def _check_packed(packed: dict, train: bool) -> None:
    inputs, sample = packed["inputs"], packed["data_samples"]
    assert inputs.dtype == torch.uint8 and inputs.shape[0] == 3  # grayscale JPEGs become 3 channels
    h, w = inputs.shape[1:]
    ori_h, ori_w = sample.ori_shape
    # 1333x800 keep-ratio: the long side reaches 1333 or the short side 800 (whichever binds)
    factor = min(max(IMG_SCALE) / max(ori_h, ori_w), min(IMG_SCALE) / min(ori_h, ori_w))
    assert (h, w) == (round(ori_h * factor), round(ori_w * factor))
    # The image stands once in the prompt: in the instruction, or in the first turn of a
    # conversation's history (a LLaVA follow-up is asked as written).
    users = [sample.instruction] + [turn["user"] for turn in sample.metainfo.get("history") or []]
    assert sum(text.count("<image>") for text in users) == 1
    gt = sample.gt_instances
    task = sample.task
    if task in ("detection", "segmentation", "grounding"):
        assert len(gt.bboxes) >= 1
        boxes = gt.bboxes
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= w and boxes[:, 1::2].max() <= h
        assert gt.labels.min() >= 0 and gt.labels.max() < len(sample.categories)
    if task in ("detection", "segmentation"):
        if not train:  # evaluation names all 80 COCO categories in dataset order
            assert len(sample.categories) == 80 and sample.categories[0] == "person"
        assert len(sample.categories) <= 80
        assert len(gt.bboxes) <= 3  # crowd regions (RLE) are not targets
    if task == "segmentation":
        k = gt.polygons.shape[1]
        assert gt.polygons.shape == (len(gt.bboxes), k, 2) and (k == 16 or train)
    if task == "grounding":
        assert len(gt.bboxes) == 1 and sample.categories == [sample.expression]
        assert "Ã" not in sample.expression  # Python 2 pickle strings decoded as UTF-8
    if task == "caption":
        assert sample.target_text and sample.target_text in sample.gt_texts
    if task == "vqa":
        assert sample.question and sample.question in sample.instruction and sample.target_text
        assert "<image>" not in sample.question


def test_refs_pickle_of_python2_reads_with_unicode_sentences(paper_tree):
    from visionllm.datasets.base import load_annotation
    refs = load_annotation(osp.join(paper_tree, "data", "refcoco", "refs(unc).p"))
    sentences = [s["sent"] for r in refs for s in r["sentences"]]
    assert "the café sign on the right" in sentences
    with pytest.raises(UnicodeDecodeError):  # the file really is a Python 2 byte-string pickle
        import pickle
        with open(osp.join(paper_tree, "data", "refcoco", "refs(unc).p"), "rb") as handle:
            pickle.load(handle)


def test_inference_pipeline_comes_from_the_test_pipeline_when_a_config_has_none():
    from visionllm.apis.inferencer import inference_pipeline
    from visionllm.apis.inputs import InputError
    cfg = Config.fromfile(STAGE2)
    assert cfg.get("infer_pipeline") is None
    # the evaluation resize and packing; no file loading, annotations, polygon targets or instruction
    assert inference_pipeline(cfg) == [dict(type="ResizeKeepRatio", scale=IMG_SCALE), dict(type="PackVisionLLMInputs")]
    own = [dict(type="ResizeKeepRatio", scale=(64, 48)), dict(type="PackVisionLLMInputs")]
    assert inference_pipeline(Config(dict(cfg.to_dict(), infer_pipeline=own))) == own
    with pytest.raises(InputError, match="neither an infer_pipeline nor a test pipeline"):
        inference_pipeline(Config(dict(model=cfg.model.to_dict())))


# ----------------------------------------------------------------------------- the whole model

def _run(args, cwd, timeout=3000):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def paper_run(paper_tree, smollm2_tokenizer_dir):  # noqa: F811
    """The small-size paper config with its pretrained directories in place, trained for two
    iterations by tools/train.py."""
    save_tiny_llama(osp.join(paper_tree, "checkpoints", "alpaca-7b"), smollm2_tokenizer_dir)
    save_tiny_bert(osp.join(paper_tree, "checkpoints", "bert-base-uncased"))
    config = write_small_config(paper_tree)
    work_dir = osp.join(paper_tree, "work_dirs", "paper_small")
    proc = _run([osp.join(REPO, "tools", "train.py"), config, "--work-dir", work_dir], paper_tree)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return dict(root=paper_tree, config=config, checkpoint=osp.join(work_dir, "iter_2.pth"), log=log)


@pytest.mark.slow
def test_two_training_iterations_of_the_paper_model(paper_run):
    assert osp.isfile(paper_run["checkpoint"])
    assert "Iter(val)" not in paper_run["log"]  # the paper configs leave evaluation to tools/test.py
    losses = [float(v) for v in re.findall(r"Iter\(train\) \[\s*\d+/2\].*?\bloss: ([-\d.einfa]+)", paper_run["log"])]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), paper_run["log"][-3000:]
    state = torch.load(paper_run["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    # The frozen pretrained LLM / BERT weights stay out of the checkpoint; LoRA and the tokenizer are in it.
    assert any("lora_" in k for k in state) and any(k.startswith("image_tokenizer.transformer") for k in state)
    assert not any(k.startswith("image_tokenizer.text_encoder.bert.") for k in state)
    queries = [v for k, v in state.items() if k.startswith("image_tokenizer.transformer") and "query" in k
               and v.ndim == 2]
    assert queries and all(v.shape[0] == 100 for v in queries)  # M = 100 image tokens


@pytest.mark.slow
def test_tools_test_prints_the_five_metric_tables(paper_run, tmp_path):
    out = str(tmp_path / "results")
    proc = _run([osp.join(REPO, "tools", "test.py"), paper_run["config"], paper_run["checkpoint"],
                 "--work-dir", str(tmp_path / "work"), "--out", out], paper_run["root"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    print(log[-6000:])
    counts = expected_counts()
    titles = [f"COCO AP (detection, {counts['coco_val_images']} images",
              f"COCO AP (segmentation, {counts['coco_val_images']} images",
              f"Visual grounding ({counts['refcoco_val']} expressions",
              f"Image captioning ({counts['caption_test']} images",
              f"VQA ({counts['vqa_val']} questions, {counts['vqa_val']} with answers"]
    lines = log.splitlines()
    for title in titles:  # each a title line followed by its table
        # (a title may go on to name its scorer or rule: "...; COCO caption toolkit (...))")
        at = [i for i, line in enumerate(lines) if line.strip() in (title + ")",) or
              line.strip().startswith(title + "; ")]
        assert at and lines[at[0] + 1].startswith("+-"), (title, log[-4000:])
    # Every test sample of every task was predicted and written in the standard result files.
    with open(osp.join(out, "caption.caption.json")) as handle:
        captions = json.load(handle)
    assert sorted(c["image_id"] for c in captions) == sorted(i for i, s in KARPATHY.items() if s == "test")
    with open(osp.join(out, "vqa.vqa.json")) as handle:
        assert len(json.load(handle)) == counts["vqa_val"]
    with open(osp.join(out, "grounding.refexp.json")) as handle:
        assert len(json.load(handle)) == counts["refcoco_val"]
    for name in ("detection.bbox.json", "segmentation.segm.json"):
        with open(osp.join(out, name)) as handle:
            records = json.load(handle)
        assert {r["image_id"] for r in records} <= set(SPLITS_2017["val2017"])
        assert {r["category_id"] for r in records} <= set(range(1, 91))  # official COCO ids


@pytest.mark.slow
def test_inference_api_runs_the_paper_config_without_an_infer_pipeline(paper_run, monkeypatch):
    from visionllm.apis.inferencer import VisionLLMInferencer, inference_pipeline
    monkeypatch.chdir(paper_run["root"])
    cfg = Config.fromfile(paper_run["config"])
    assert cfg.get("infer_pipeline") is None
    assert [s["type"] for s in inference_pipeline(cfg)] == ["ResizeKeepRatio", "PackVisionLLMInputs"]
    inferencer = VisionLLMInferencer(cfg, paper_run["checkpoint"])
    image = osp.join("data", "coco", "val2017", "000000000139.jpg")
    w, h, _ = IMAGES[139]
    det = inferencer(image, 'Detect every object of the categories {"person": <c0>, "dog": <c1>} in <image>. '
                            "Answer as a list of (c, x1, y1, x2, y2).")
    assert det.task == "detection" and det.boxes.shape[1] == 4 and len(det.boxes) == len(det.scores)
    if len(det.boxes):
        assert det.boxes[:, 0::2].max() <= w + 1 and det.boxes[:, 1::2].max() <= h + 1
        assert set(det.names) <= {"person", "dog"}
    caption = inferencer(image, "<image> Write a short caption for the image.")
    assert caption.task == "caption" and isinstance(caption.text, str)
