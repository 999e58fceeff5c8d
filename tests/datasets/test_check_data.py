"""tools/check_data.py on the paper data layout (tests/paper_data_tree.py): a complete tree
passes with the expected counts, a broken copy gives one line per problem and exit code 1, and
the training / test tools stop with one line per missing input before building anything."""
import json
import os
import os.path as osp
import shutil
import sys

import pytest
from paper_data_tree import expected_counts, write_paper_data_tree
from repo_paths import REPO
from tool_refusal import tool_refusal

STAGE2 = osp.join(REPO, "configs", "visionllm_r50_alpaca7b_stage2.py")
sys.path.insert(0, osp.join(REPO, "tools"))

import check_data  # noqa: E402  (tools/check_data.py)

NO_PRETRAINED = ["--cfg-options", "load_from=None", "--no-pretrained"]


@pytest.fixture(scope="module")
def good_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("check_data_good"))
    write_paper_data_tree(root)
    return root


def run_check(root, monkeypatch, capsys, *args):
    monkeypatch.chdir(root)
    code = check_data.main([STAGE2, *args])
    return code, capsys.readouterr().out.splitlines()


def table_rows(lines):
    """``{(split, dataset, task): (samples, images, skipped)}`` from the printed table."""
    rows = {}
    for line in lines:
        cells = line.split()
        if len(cells) == 7 and cells[0] in ("train", "val", "val+test", "test") and cells[4].isdigit():
            rows[(cells[0], cells[1], cells[2])] = tuple(int(c) for c in cells[4:])
    return rows


def test_complete_tree_passes_with_samples_per_split_and_task(good_tree, monkeypatch, capsys):
    code, lines = run_check(good_tree, monkeypatch, capsys, *NO_PRETRAINED)
    counts = expected_counts()
    rows = table_rows(lines)
    assert rows == {
        ("train", "CocoInstancesDataset", "detection"): (counts["coco_train_images"], counts["coco_train_images"], 0),
        ("train", "CocoInstancesDataset", "segmentation"): (counts["coco_train_images"], counts["coco_train_images"], 0),
        ("train", "RefCocoDataset", "grounding"): (counts["refcoco_train"], 2, 0),
        ("train", "CocoCaptionDataset", "caption"): (counts["caption_train"], counts["caption_train"], 0),
        ("train", "VQAv2Dataset", "vqa"): (counts["vqa_train"], counts["vqa_train"] // 2, 0),
        ("train", "LlavaInstructDataset", "vqa"): (counts["llava"], 2, 0),
        ("test", "CocoInstancesDataset", "detection"): (counts["coco_val_images"], counts["coco_val_images"], 0),
        ("test", "CocoInstancesDataset", "segmentation"): (counts["coco_val_images"], counts["coco_val_images"], 0),
        ("test", "RefCocoDataset", "grounding"): (counts["refcoco_val"], 1, 0),
        ("test", "CocoCaptionDataset", "caption"): (counts["caption_test"], counts["caption_test"], 0),
        ("test", "VQAv2Dataset", "vqa"): (counts["vqa_val"], 3, 0),
    }, "\n".join(lines)
    assert any(f"train/vqa={counts['vqa_train'] + counts['llava']}," in line for line in lines)
    assert not [line for line in lines if line.startswith(("MISSING", "BAD"))]
    assert lines[-1] == "0 missing, 0 bad-annotation lines" and code == 0


def test_missing_pretrained_inputs_are_named_with_their_fix(good_tree, monkeypatch, capsys):
    code, lines = run_check(good_tree, monkeypatch, capsys)
    missing = [line for line in lines if line.startswith("MISSING")]
    assert code == 1
    assert any(line.startswith("MISSING: checkpoints/alpaca-7b (model.task_decoder.llm.source): put the Hugging Face")
               for line in missing)
    assert any(line.startswith("MISSING: checkpoints/bert-base-uncased (model.image_tokenizer.text_encoder.model_dir)")
               for line in missing)
    assert any(line.startswith("MISSING: checkpoints/resnet50.pth (model.image_tokenizer.backbone.checkpoint)")
               for line in missing)
    assert any(line.startswith("MISSING: work_dirs/visionllm_r50_alpaca7b_stage1/iter_50000.pth (load_from): "
                               "train the previous stage first") for line in missing)
    assert len(missing) == 4, "\n".join(lines)


@pytest.fixture
def broken_tree(good_tree, tmp_path):
    """A copy with one annotation file and one image deleted and bad annotations added."""
    root = str(tmp_path / "broken")
    shutil.copytree(good_tree, root)
    data = osp.join(root, "data")
    os.remove(osp.join(data, "vqa", "v2_mscoco_val2014_annotations.json"))
    os.remove(osp.join(data, "coco", "train2017", "000000000025.jpg"))
    path = osp.join(data, "coco", "annotations", "instances_train2017.json")
    with open(path) as handle:
        coco = json.load(handle)
    first = next(a for a in coco["annotations"] if a["image_id"] == 9 and not a["iscrowd"])
    coco["annotations"] += [
        dict(first, id=90001, bbox=[10.0, 10.0, 0.0, 5.0]),                 # zero-area box
        dict(first, id=90002, bbox=[500.0, 10.0, 20.0, 20.0]),              # outside the 160x120 image
        dict(first, id=90003, category_id=12),                              # 12 is no COCO category id
        dict(first, id=90004, segmentation=[[1.0, 1.0, 2.0, 2.0]]),         # a polygon of two points
    ]
    with open(path, "w") as handle:
        json.dump(coco, handle)
    questions = osp.join(data, "vqa", "v2_OpenEnded_mscoco_train2014_questions.json")
    with open(questions) as handle:
        q = json.load(handle)
    q["questions"].append(dict(image_id=9, question="is this unanswered?", question_id=777))
    with open(questions, "w") as handle:
        json.dump(q, handle)
    return root


def test_broken_tree_gives_one_line_per_problem(broken_tree, monkeypatch, capsys):
    code, lines = run_check(broken_tree, monkeypatch, capsys, *NO_PRETRAINED)
    problems = [line for line in lines if line.startswith(("MISSING", "BAD"))]
    train = "data/coco/annotations/instances_train2017.json"
    expected = {
        "MISSING: data/vqa/v2_mscoco_val2014_annotations.json (answers file of VQAv2Dataset, test): "
        "get the VQAv2 questions + annotations and COCO 2014 images (docs/datasets.md#vqav2)",
        # the image's annotations are lost for both tasks (3 objects on image 25), and its LLaVA record
        f"MISSING: {train} [train detection]: 3 missing image file (e.g. data/coco/train2017/000000000025.jpg)",
        f"MISSING: {train} [train segmentation]: 3 missing image file (e.g. data/coco/train2017/000000000025.jpg)",
        "MISSING: data/llava/llava_instruct_150k.json [train vqa]: 1 missing image file "
        "(e.g. data/coco/train2017/000000000025.jpg)",
        f"BAD: {train} [train detection]: 1 box outside the image (e.g. 90002)",
        f"BAD: {train} [train detection]: 1 unknown category id (e.g. 90003)",
        f"BAD: {train} [train detection]: 1 zero-area box (e.g. 90001)",
        f"BAD: {train} [train segmentation]: 1 box outside the image (e.g. 90002)",
        f"BAD: {train} [train segmentation]: 1 empty polygon (e.g. 90004)",
        f"BAD: {train} [train segmentation]: 1 unknown category id (e.g. 90003)",
        f"BAD: {train} [train segmentation]: 1 zero-area box (e.g. 90001)",
        "BAD: data/vqa/v2_OpenEnded_mscoco_train2014_questions.json [train vqa]: 1 question without answers (e.g. 777)",
    }
    assert set(problems) == expected and len(problems) == len(expected), "\n".join(lines)
    assert lines[-1] == "4 missing, 8 bad-annotation lines" and code == 1
    counts = expected_counts()
    rows = table_rows(lines)
    assert rows[("train", "CocoInstancesDataset", "detection")][:2] == (counts["coco_train_images"] - 1,) * 2
    assert rows[("test", "VQAv2Dataset", "vqa")] == (0, 0, 0)  # its reader could not start


def test_bad_annotations_alone_fail_only_when_strict(good_tree, tmp_path, monkeypatch, capsys):
    root = str(tmp_path / "bad_only")
    shutil.copytree(good_tree, root)
    path = osp.join(root, "data", "coco", "annotations", "instances_val2017.json")
    with open(path) as handle:
        coco = json.load(handle)
    coco["annotations"].append(dict(coco["annotations"][0], id=90005, bbox=[3.0, 3.0, 4.0, -1.0]))
    with open(path, "w") as handle:
        json.dump(coco, handle)
    code, lines = run_check(root, monkeypatch, capsys, *NO_PRETRAINED)
    assert code == 0 and lines[-1] == "0 missing, 2 bad-annotation lines", "\n".join(lines)
    assert f"BAD: data/coco/annotations/instances_val2017.json [test detection]: 1 zero-area box (e.g. 90005)" in lines
    code, lines = run_check(root, monkeypatch, capsys, *NO_PRETRAINED, "--strict")
    assert code == 1


def test_train_and_test_stop_with_one_line_per_missing_input(broken_tree, tmp_path, monkeypatch):
    """Nothing written: the work dir is never created."""
    from tools.test import main as test_main
    from tools.train import main as train_main

    work_dir = str(tmp_path / "work")
    message = tool_refusal(train_main, [STAGE2, "--work-dir", work_dir], broken_tree, monkeypatch)
    errors = [line for line in message.splitlines() if line.startswith("error: ")]
    assert errors[0] == ("error: missing data/vqa/v2_mscoco_val2014_annotations.json (answers file of VQAv2Dataset, "
                         "test): get the VQAv2 questions + annotations and COCO 2014 images (docs/datasets.md#vqav2)")
    assert any(line.startswith("error: missing checkpoints/alpaca-7b (model.task_decoder.llm.source): put the "
                               "Hugging Face LLaMA directory") for line in errors)
    assert any(line.startswith("error: missing checkpoints/bert-base-uncased") for line in errors)
    assert any(line.startswith("error: missing checkpoints/resnet50.pth") for line in errors)
    assert any(line.startswith("error: missing work_dirs/visionllm_r50_alpaca7b_stage1/") for line in errors)
    assert len(errors) == 5, message
    assert not osp.exists(work_dir)

    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"")
    message = tool_refusal(test_main, [STAGE2, str(checkpoint), "--work-dir", work_dir], broken_tree, monkeypatch)
    assert "error: missing checkpoints/alpaca-7b (model.task_decoder.llm.source)" in message
    assert "error: missing data/vqa/v2_mscoco_val2014_annotations.json" in message
    assert not osp.exists(work_dir)


def test_loaders_name_a_missing_pretrained_directory_and_the_fix(tmp_path):
    from visionllm.models.image_tokenizer.text_encoder import TextEncoder
    from visionllm.models.llm.llm_loader import load_causal_lm
    missing = str(tmp_path / "checkpoints" / "alpaca-7b")
    with pytest.raises(FileNotFoundError) as err:
        load_causal_lm(missing)
    message = str(err.value)
    assert message.startswith(f"LLM directory not found: {missing} (put the Hugging Face LLaMA directory")
    assert "\n" not in message
    os.makedirs(missing)  # present but empty: still one line, naming what is absent
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        load_causal_lm(missing)
    with pytest.raises(FileNotFoundError) as err:
        TextEncoder(model_dir=str(tmp_path / "bert-base-uncased"))
    assert str(err.value).startswith(f"text encoder directory not found: {tmp_path / 'bert-base-uncased'}")


def test_infer_names_missing_pretrained_inputs_before_building(good_tree, monkeypatch, capsys):
    from tools.infer import main as infer_main

    image = osp.join(good_tree, "data", "coco", "val2017", "000000000139.jpg")
    monkeypatch.chdir(good_tree)
    code = infer_main([STAGE2, "no-checkpoint.pth", image, "--instruction",
                       "<image> Write a short caption for the image."])
    stderr = capsys.readouterr().err
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert any(line.startswith("error: missing checkpoints/alpaca-7b (model.task_decoder.llm.source): put the ")
               for line in errors)
    assert len(errors) == 3 and "load_from" not in stderr, stderr  # LLM, BERT, ResNet-50 weights
