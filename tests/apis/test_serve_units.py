"""Parts of the server without a model: the JSON answer of a result, reading uploads, presets."""
import io

import numpy as np
import pytest
from PIL import Image

from visionllm.apis.inferencer import VisionLLMResult, describe_instruction
from visionllm.apis.inputs import InputError
from visionllm.apis.server import check_score_threshold, open_upload, result_to_dict


def _result(task="detection", polygons=False, text=None):
    boxes = np.array([[1.5, 2.0, 30.25, 40.0], [5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 10.0, 12.0]], np.float32)
    result = VisionLLMResult(task=task, instruction="", image_size=(120, 160), categories=["circle", "star"],
                             boxes=boxes, scores=np.array([0.9, 0.1, 0.5], np.float32),
                             labels=np.array([1, 0, 0]), text=text)
    if polygons:
        result.polygons = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    return result


def test_result_to_dict_schema_and_threshold():
    answer = result_to_dict(_result(), elapsed_ms=12.34, score_threshold=0.3)
    assert set(answer) == {"task", "text", "objects", "image_size", "elapsed_ms"}
    assert answer["task"] == "detection" and answer["text"] is None
    assert answer["image_size"] == [160, 120]  # [w, h] from the result's (h, w)
    assert answer["elapsed_ms"] == 12.3
    assert [o["name"] for o in answer["objects"]] == ["star", "circle"]  # the 0.1 slot is dropped
    first = answer["objects"][0]
    assert set(first) == {"name", "score", "box", "polygon"}
    assert first["box"] == [1.5, 2.0, 30.25, 40.0] and first["polygon"] is None
    assert first["score"] == pytest.approx(0.9)
    assert len(result_to_dict(_result(), 1.0, score_threshold=0.0)["objects"]) == 3


def test_result_to_dict_polygons_grounding_and_text():
    answer = result_to_dict(_result("segmentation", polygons=True), 1.0, score_threshold=0.0)
    assert answer["objects"][2]["polygon"] == [[16.0, 17.0], [18.0, 19.0], [20.0, 21.0], [22.0, 23.0]]
    # The one box of grounding is the answer whatever its score.
    grounding = _result("grounding")
    grounding.boxes, grounding.scores, grounding.labels = grounding.boxes[1:2], grounding.scores[1:2], grounding.labels[1:2]
    assert len(result_to_dict(grounding, 1.0, score_threshold=0.3)["objects"]) == 1
    caption = VisionLLMResult(task="caption", instruction="", image_size=(10, 20), text="two red circles")
    assert result_to_dict(caption, 1.0) == dict(task="caption", text="two red circles", objects=[],
                                                image_size=[20, 10], elapsed_ms=1.0)


def _png_bytes(size=(40, 30), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_open_upload_reads_images_and_refuses_bad_bytes():
    image = open_upload(_png_bytes(), "a.png")
    assert image.size == (40, 30)
    with pytest.raises(InputError, match=r"^cannot read image x\.png: cannot identify image file 'x\.png'$"):
        open_upload(b"no image here", "x.png")
    with pytest.raises(InputError, match="cannot read image cut.png"):
        open_upload(_png_bytes((300, 300))[:200], "cut.png")
    with pytest.raises(InputError, match="empty"):
        open_upload(b"", "e.png")


def test_score_threshold_range():
    assert check_score_threshold(None) == 0.3 and check_score_threshold(0.0) == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="score_threshold"):
            check_score_threshold(bad)


def test_presets_are_instructions_of_their_task():
    from visionllm.apis.web_page import PRESETS, preset_instruction

    for preset, task in PRESETS.items():
        text = preset_instruction(preset, categories=["circle", "star"], expression="the big star",
                                  question="how many stars are there?")
        assert describe_instruction(text)["task"] == task
    assert '"circle"' in preset_instruction("detect", categories=["circle"])
    assert "the big star" in preset_instruction("ground", expression="the big star")
