"""Regions through the inference API and the CLI: pixels of the input image reach the model in
pixels of the resized image (the inverse of how outputs are mapped back), every bad region is one
InputError line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from repo_paths import REPO
from tiny_model import write_tiny_config
from visionllm.apis.inputs import InputError, load_image, original_size, parse_regions

pytestmark = pytest.mark.slow  # the whole tiny model

QUESTION = "<image> What colour is <region>?"
# (x1, y1, x2, y2) in pixels of the 4500 x 2600 input; the second lies beyond the decoded 2250 x 1300
REGIONS = [[900.0, 400.0, 2100.0, 1500.0], [3000.0, 1700.0, 4400.0, 2500.0]]


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_llm_dir):
    return write_tiny_config(tmp_path_factory.mktemp("region_cfg"), tiny_llm_dir)


@pytest.fixture(scope="module")
def inferencer(config, tiny_workspace):
    from visionllm.apis.inferencer import VisionLLMInferencer
    return VisionLLMInferencer(config)


@pytest.fixture(scope="module")
def large_image(tmp_path_factory):
    """A wide image larger than the decoder's limit (reduced while decoding), a bright patch in
    colour channel k under region k."""
    img = np.zeros((2600, 4500, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(REGIONS, int)):
        img[y1:y2, x1:x2, k] = 255
    path = tmp_path_factory.mktemp("large") / "wide.png"
    Image.fromarray(img).save(path)
    return str(path)


def test_regions_reach_the_model_in_resized_pixels(inferencer, large_image):
    from visionllm.apis.inferencer import describe_instruction
    instruction = "<image> Is <region> left of <region>?"
    size = original_size(large_image)
    assert size == (2600, 4500) and load_image(large_image).shape[:2] == (1300, 2250)  # reduced while decoding
    data = inferencer._model_inputs([(load_image(large_image), size, parse_regions(instruction, REGIONS, size))],
                                    describe_instruction(instruction))
    sample = data["data_samples"][0]
    h, w = sample.metainfo["img_shape"]
    assert (h, w) == (55, 96)  # the tiny config's resize of a 4500 x 2600 image
    sx, sy = sample.metainfo["scale_factor"]
    regions = np.asarray(sample.metainfo["regions"])
    # outputs go back by dividing by scale_factor (StructuredPostProcessor): regions came forward by it
    assert np.allclose(regions / np.asarray([sx, sy, sx, sy]), REGIONS, rtol=1e-5)
    # and the boxes sit on their patches in the image the model sees
    pixels = data["inputs"]["images"][0]
    std = torch.as_tensor(inferencer.model.data_preprocessor.std).reshape(-1, 1, 1)
    mean = torch.as_tensor(inferencer.model.data_preprocessor.mean).reshape(-1, 1, 1)
    image = (pixels[:, :h, :w] * std + mean).numpy()
    for k in range(2):
        ys, xs = np.nonzero(image[k] >= 128)
        assert np.abs(regions[k] - [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).max() <= 1.0


def test_a_region_question_is_answered(inferencer, large_image):
    result = inferencer(large_image, QUESTION, regions=REGIONS[:1])
    assert result.task == "region_vqa" and isinstance(result.text, str)
    # The result keeps the regions as given (pixels of the input image), for drawing and reading.
    assert result.regions.tolist() == [[float(v) for v in REGIONS[0]]]
    results = inferencer([large_image, large_image], QUESTION, regions=[REGIONS[1]])
    assert len(results) == 2 and all(isinstance(r.text, str) for r in results)


@pytest.mark.parametrize("instruction, regions, message", [
    (QUESTION, None, r"1 <region> placeholder\(s\) but 0 region"),
    (QUESTION, REGIONS, r"1 <region> placeholder\(s\) but 2 region"),
    ("<image> Write a short caption for the image.", REGIONS[:1], "no <region> placeholder"),
    (QUESTION, [[0, 0, 4501, 100]], "lies outside the 4500x2600 image"),
    (QUESTION, [[10, 10, 10, 50]], "zero or negative area"),
    (QUESTION, [[10, 10, 50]], "not four finite numbers"),
    (QUESTION, [10, 10, 50, 50], "list of boxes"),
])
def test_bad_regions_are_one_input_error_line(inferencer, large_image, instruction, regions, message):
    with pytest.raises(InputError, match=message) as error:
        inferencer(large_image, instruction, regions=regions)
    assert "\n" not in str(error.value)


def test_cli_region_flags(config, inferencer, large_image, tiny_workspace, tmp_path):
    checkpoint = tmp_path / "tiny.pth"
    dropped = set(inferencer.model.frozen_pretrained_keys())
    torch.save(dict(state_dict={k: v for k, v in inferencer.model.state_dict().items() if k not in dropped}), checkpoint)
    tool = os.path.join(REPO, "tools", "infer.py")
    base = [sys.executable, tool, config, str(checkpoint), large_image, "--out-dir", str(tmp_path)]
    run = subprocess.run(base + ["--instruction", "<image> Is <region> left of <region>?", "--region", "900,400,2100,1500",
                                 "--region", "3000, 1700, 4400, 2500"], capture_output=True, text=True,
                         cwd=tiny_workspace, timeout=300)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["task"] == "region_vqa" and isinstance(record["text"], str)


def test_cli_refuses_bad_input_before_building_the_model(config, large_image, tiny_workspace, tmp_path,
                                                         monkeypatch, capsys):
    """Bad regions, a bad instruction or a missing image exit 2 with the one-line message; the
    checkpoint does not exist, so the model was never built."""
    from tools.infer import main

    monkeypatch.chdir(tiny_workspace)
    base = [config, str(tmp_path / "no-such-checkpoint.pth"), large_image]
    for flags, message in ((["--instruction", QUESTION, "--region", "1,2,3"], "--region takes four comma-separated"),
                           (["--instruction", QUESTION], "1 <region> placeholder(s) but 0 region(s)"),
                           (["--instruction", QUESTION, "--region", "0,0,5000,10"], "lies outside the 4500x2600 image"),
                           (["--instruction", 'Detect {} in <image> as (c, x1, y1, x2, y2).'], "category set is empty"),
                           ([str(tmp_path / "none.png"), "--instruction", QUESTION, "--region", "1,2,3,4"],
                            "image file not found")):
        assert main(base + flags + ["--out-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_a_question_answered_through_grounding_shows_the_boxes_it_asked_about():
    from mmdet.structures import DetDataSample

    from visionllm.apis.inferencer import VisionLLMInferencer
    sample = DetDataSample()
    boxes = [[10.0, 20.0, 30.0, 40.0], [50.0, 5.0, 90.0, 45.0]]
    sample.set_metainfo(dict(grounded_boxes=boxes, grounded_names=["the red star", "the blue circle"]))
    sample.pred_text = "yes"
    description = dict(task="vqa", instruction="<image> Is the red star left of the blue circle?", categories=[])
    result = VisionLLMInferencer._to_result(sample, description, (100, 120))
    assert result.text == "yes" and result.regions.tolist() == boxes
    assert result.region_names == ["the red star", "the blue circle"]
    plain = DetDataSample()
    plain.pred_text = "no"
    assert VisionLLMInferencer._to_result(plain, description, (100, 120)).regions is None
    assert VisionLLMInferencer._to_result(plain, description, (100, 120)).region_names is None
