"""tools/browse_dataset.py on a small varied shapes tree with the one-run config: the records are
what the pipeline packed, the same config gives the same fingerprint twice, a different mixture
gives another, pictures are written, and bad arguments stop with a message."""
import hashlib
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image
from repo_paths import REPO

from visionllm.datasets.shapes import write_shapes_dataset

ONERUN = os.path.join(REPO, "configs", "visionllm_tiny_shapes_onerun.py")
VARIED_VAL = os.path.join(REPO, "configs", "visionllm_tiny_shapes_onerun_varied_val.py")
sys.path.insert(0, os.path.join(REPO, "tools"))

import browse_dataset  # noqa: E402  (tools/browse_dataset.py)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("browse_workspace")
    write_shapes_dataset(str(root / "data" / "shapes_varied"), num_train=8, num_val=2, seed=3, style="varied",
                         num_heldout=2)
    return root


def browse(workspace, monkeypatch, capsys, *args, config=ONERUN):
    monkeypatch.chdir(workspace)
    assert browse_dataset.main([config, "--quiet", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    return lines[-1].rsplit(" ", 1)[-1], lines


def test_records_are_the_packed_samples(workspace, monkeypatch):
    from visionllm.apis.runner import load_config
    from visionllm.datasets.browsing import iter_samples, sample_record

    monkeypatch.chdir(workspace)
    pairs = list(iter_samples(load_config(ONERUN), "train", 12))
    assert len(pairs) == 12
    for inputs, sample in pairs:
        record = sample_record(inputs, sample)
        assert record["task"] == sample.task and record["instruction"] == sample.metainfo["instruction"]
        assert record["image_md5"] == hashlib.md5(inputs.numpy().tobytes()).hexdigest()
        assert record["image_shape"] == list(inputs.shape)
        boxes = np.asarray(record["boxes"]).reshape(-1, 4)
        assert len(boxes) == len(record["labels"]) == len(sample.gt_instances)
        np.testing.assert_allclose(boxes, sample.gt_instances.bboxes.numpy(), atol=0.006)
        json.dumps(record)  # plain JSON


def test_fingerprint_repeats_and_tells_mixtures_apart(workspace, monkeypatch, capsys, tmp_path):
    first, lines = browse(workspace, monkeypatch, capsys, "-n", "16", "--out", str(tmp_path / "a.jsonl"))
    again, _ = browse(workspace, monkeypatch, capsys, "-n", "16", "--out", str(tmp_path / "b.jsonl"))
    assert first == again and len(first) == 32
    assert open(tmp_path / "a.jsonl").read() == open(tmp_path / "b.jsonl").read()
    assert len(open(tmp_path / "a.jsonl").read().splitlines()) == 16
    only_detection = "train_dataloader.dataset.ratios=[1,0,0,0,0,0,0,0,0,0,0]"
    other, lines = browse(workspace, monkeypatch, capsys, "-n", "16", "--cfg-options", only_detection)
    assert other != first
    assert lines[-2] == "samples per task: detection=16"


def test_pictures_of_the_test_split(workspace, monkeypatch, capsys, tmp_path):
    browse(workspace, monkeypatch, capsys, "--split", "test", "-n", "3", "--show-dir", str(tmp_path / "pics"),
           config=VARIED_VAL)
    files = sorted(os.listdir(tmp_path / "pics"))
    assert len(files) == 3 and all(f.endswith(".png") for f in files)
    assert min(Image.open(tmp_path / "pics" / files[0]).size) > 0


def test_bad_arguments(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    with pytest.raises(SystemExit):
        browse_dataset.main([ONERUN, "-n", "0"])
    assert "-n must be at least 1" in capsys.readouterr().err
    from visionllm.apis.runner import load_config
    from visionllm.datasets.browsing import iter_samples
    with pytest.raises(ValueError, match="never ends"):
        next(iter_samples(load_config(ONERUN), "train", None))
