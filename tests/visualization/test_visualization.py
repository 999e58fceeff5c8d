"""The one visualizer: registered in VISUALIZERS, the same picture for the inferencer's result
and for the test loop's data sample of the same prediction, the one palette, the score rule."""
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from mmengine.visualization import Visualizer
from PIL import Image

from visionllm.apis.inferencer import VisionLLMResult
from visionllm.registry import VISUALIZERS
from visionllm.visualization import PALETTE, VisionLLMVisualizer


def _image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 60, (400, 500, 3), dtype=np.uint8)  # dark: no palette colour in it


def _result(task="detection", scores=(0.9, 0.8)):
    return VisionLLMResult(task=task, instruction="", image_size=(400, 500), categories=["circle", "star", "cat"],
                           boxes=np.array([[40, 50, 200, 220], [260, 100, 420, 300]], np.float32)[:len(scores)],
                           scores=np.array(scores, np.float32), labels=np.array([2, 0], np.int64)[:len(scores)],
                           text=None)


def _sample(result):
    """The data sample the test loop would hand over for the same prediction: labels are the
    sample's category ids, coordinates in the original image."""
    sample = DetDataSample()
    ids = [10 + i for i in range(len(result.categories))]
    sample.set_metainfo(dict(task=result.task, categories=result.categories, category_ids=ids))
    pred = InstanceData()
    pred.bboxes = torch.from_numpy(result.boxes)
    pred.scores = torch.from_numpy(result.scores)
    pred.labels = torch.tensor([ids[i] for i in result.labels])
    sample.pred_instances = pred
    return sample


@pytest.fixture(scope="module")
def visualizer():
    return VISUALIZERS.build(dict(type="VisionLLMVisualizer", name="test_visualization"))


def test_registered_as_an_mmengine_visualizer(visualizer):
    assert isinstance(visualizer, VisionLLMVisualizer) and isinstance(visualizer, Visualizer)


def test_result_and_data_sample_give_the_same_picture(visualizer, tmp_path):
    result = _result()
    from_result = visualizer.draw_result(_image(), result)
    out = tmp_path / "show" / "sample.png"
    visualizer.add_datasample("sample", _image(), _sample(result), out_file=str(out))
    from_sample = np.asarray(Image.open(out).convert("RGB"))
    assert from_result.shape == from_sample.shape == (400, 500, 3)
    assert np.array_equal(from_result, from_sample)
    assert not np.array_equal(from_result, _image())


def test_boxes_in_the_palette_colour_of_their_category(visualizer):
    picture = visualizer.draw_result(_image(), _result())
    # The left edge of each box (x1, mid-height) is drawn in its category's colour.
    assert tuple(picture[135, 40]) == PALETTE[2]
    assert tuple(picture[200, 260]) == PALETTE[0]


def test_low_scores_are_left_out_except_for_grounding(visualizer):
    low = visualizer.draw_result(_image(), _result(scores=(0.1,)))
    assert np.array_equal(low, _image())
    grounding = visualizer.draw_result(_image(), _result(task="grounding", scores=(0.1,)))
    assert tuple(grounding[135, 40]) == PALETTE[2]


def test_input_regions_are_drawn_in_white(visualizer):
    result = _result(task="vqa", scores=())
    result.text = "red"
    without = visualizer.draw_result(_image(), result)
    result.regions = np.array([[100, 120, 300, 260]], np.float32)
    picture = visualizer.draw_result(_image(), result)
    # The region's left edge at mid-height, in pixels of the image (400 x 500: not enlarged).
    assert tuple(picture[190, 100]) == (255, 255, 255) and tuple(without[190, 100]) != (255, 255, 255)


def test_composed_boxes_are_labelled_by_their_names_below_the_box(visualizer):
    result = _result(task="caption", scores=())
    result.regions = np.array([[100, 120, 300, 260]], np.float32)
    numbered = visualizer.draw_result(_image(), result)
    result.region_names = ["a long name: red square"]
    named = visualizer.draw_result(_image(), result)
    rows, cols = np.nonzero(np.any(named != numbered, axis=2))
    # only the label under the box differs, and it is wider than "region 1"
    assert len(rows) and rows.min() >= 260 and rows.max() <= 260 + 14
    assert cols.max() > 100 + 6 * len("region 1") + 4


def test_data_sample_regions_give_the_inferencers_picture(visualizer, tmp_path):
    """Input regions come in the resized image's pixels (drawn back at ``scale_factor``); boxes a
    composed answer grounded come in original pixels with their names: both pictures equal the
    inferencer's picture of the same prediction."""
    box = np.array([[100, 120, 300, 260]], np.float32)
    asked = _result(task="region_vqa", scores=())
    asked.regions = box
    sample = _sample(asked)
    sample.set_metainfo(dict(regions=torch.from_numpy(box * np.array([0.5, 0.25, 0.5, 0.25], np.float32)),
                             scale_factor=(0.5, 0.25)))
    composed = _result(task="vqa", scores=())
    composed.regions, composed.region_names = box, ["two red squares"]
    grounded = _sample(composed)
    grounded.set_metainfo(dict(grounded_boxes=box.tolist(), grounded_names=["two red squares"]))
    for result, data_sample in ((asked, sample), (composed, grounded)):
        out = tmp_path / f"{result.task}.png"
        visualizer.add_datasample(result.task, _image(), data_sample, out_file=str(out))
        from_sample = np.asarray(Image.open(out).convert("RGB"))
        assert tuple(from_sample[190, 100]) == (255, 255, 255)
        assert np.array_equal(from_sample, visualizer.draw_result(_image(), result))
